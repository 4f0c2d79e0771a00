//! `expiring_page_renewable` (credential kinds): instances of elements that
//! renew without a refresh token (client credentials) are selected only
//! when their element is named; everything else as `expiring_page`.

use elements_core::{Configuration, Secret};
use elements_store::{connect, hash_secret, Keyring, NewAccount, NewInstance, Tokens};
use elements_testkit::pg::PgCluster;

fn now_secs() -> i64 {
    elements_store::now_millis() / 1000
}

async fn check(url: &str) {
    let store = connect(url, Keyring::new(vec![Keyring::generate_key()]).unwrap())
        .await
        .unwrap();
    let owner = store
        .create_account(NewAccount {
            organization_name: "Org".into(),
            organization_secret_hash: hash_secret("org-secret"),
            email: "a@example.com".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            user_secret_hash: hash_secret("user-secret"),
        })
        .await
        .unwrap();
    let soon = now_secs() + 60;
    let create = |key: &str, refresh: Option<&str>, expires_at: i64, n: usize| {
        let store = store.clone();
        let new = NewInstance {
            organization_id: owner.organization_id,
            user_id: owner.user.id,
            element_key: key.into(),
            element_id: 1,
            name: format!("{key}-{n}"),
            tags: vec![],
            configuration: Configuration::new(),
            token_hash: hash_secret(&format!("token-{key}-{n}")),
            tokens: Tokens {
                access_token: Some(Secret::new("at")),
                refresh_token: refresh.map(Secret::new),
                token_type: None,
                expires_at: Some(expires_at),
            },
        };
        async move { store.create_instance(new).await.unwrap().id }
    };
    let with_refresh = create("oauth2-el", Some("rt"), soon, 1).await;
    let cc = create("cc-el", None, soon + 1, 2).await;
    let _no_refresh = create("oauth2-el", None, soon + 2, 3).await;
    let _later = create("cc-el", None, soon + 100_000, 4).await;
    let horizon = now_secs() + 3600;
    let ids = |page: Vec<(i64, i64, i64)>| page.into_iter().map(|r| r.0).collect::<Vec<_>>();

    let plain = store.expiring_page(horizon, None, 10).await.unwrap();
    let none: &[String] = &[];
    assert_eq!(
        store
            .expiring_page_renewable(horizon, None, 10, none)
            .await
            .unwrap(),
        plain
    );
    assert_eq!(ids(plain), [with_refresh]);
    let renewable = [
        "cc-el".to_owned(),
        "x'); DROP TABLE instances; --".to_owned(),
    ];
    assert_eq!(
        ids(store
            .expiring_page_renewable(horizon, None, 10, &renewable)
            .await
            .unwrap()),
        [with_refresh, cc]
    );
    // Keyset paging goes on after the last row.
    assert_eq!(
        ids(store
            .expiring_page_renewable(horizon, Some((soon, with_refresh)), 10, &renewable)
            .await
            .unwrap()),
        [cc]
    );
}

#[tokio::test]
async fn sqlite_selects_renewable_elements() {
    let dir = tempfile::tempdir().unwrap();
    check(&format!("sqlite://{}", dir.path().join("k.db").display())).await;
}

#[tokio::test]
async fn postgres_selects_renewable_elements() {
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    let url = pg.create_database("kinds").unwrap();
    check(&url).await;
}
