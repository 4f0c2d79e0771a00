-- wrk script: POST the seed's instance body (scripts/profile/create.sh sets AUTHZ).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("AUTHZ")
wrk.body = '{"element":{"key":"hubspot"},"providerData":{"access_token":"bench-access-token","refresh_token":"bench-refresh-token","expires_in":"1800"},"configuration":{"oauth.api.key":"test-client","oauth.api.secret":"123456","oauth.callback.url":"www.samplecallbackurl.com","oauth.scope":"contacts-rw+offline"},"name":"Bench"}'
