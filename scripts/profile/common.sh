# Sourced by the profiling scripts (from the repository's root): where
# their files go, and the seed's oauth/url query.
PROF=${PROF_DIR:-/tmp/elements-prof}
mkdir -p "$PROF"
Q='apiKey=123456789d-1234-12e4-bda9-12345b8bf20&apiSecret=123456&scope=contacts-rw%20offline&callbackUrl=http://demonstrab.ly'
