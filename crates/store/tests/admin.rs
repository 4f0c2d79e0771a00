//! The administrative parts of the store, on both engines: callback
//! allow-lists, the key check, and rewrapping secrets under a new key.

use elements_core::{Configuration, Secret};
use elements_store::{
    connect, hash_secret, rewrap, CreationChecks, Keyring, NewAccount, NewInstance, StoreError,
    Tokens,
};
use elements_testkit::pg::PgCluster;

fn account(tag: &str) -> NewAccount {
    NewAccount {
        organization_name: tag.into(),
        organization_secret_hash: hash_secret(&format!("org-{tag}")),
        email: format!("{tag}@test"),
        first_name: "F".into(),
        last_name: "L".into(),
        user_secret_hash: hash_secret(&format!("user-{tag}")),
    }
}

async fn story(url: &str) {
    let (k1, k2) = (Keyring::generate_key(), Keyring::generate_key());
    let store = connect(url, Keyring::new(vec![k1]).unwrap()).await.unwrap();
    let a = store.create_account(account("a")).await.unwrap();
    let b = store.create_account(account("b")).await.unwrap();

    // Allow-lists: per organization, replaced whole, sorted.
    assert!(store
        .callback_urls(a.organization_id)
        .await
        .unwrap()
        .is_empty());
    let list = vec![
        "https://z.test/cb".to_owned(),
        "https://a.test/cb".to_owned(),
    ];
    store
        .set_callback_urls(a.organization_id, &list)
        .await
        .unwrap();
    assert_eq!(
        store.callback_urls(a.organization_id).await.unwrap(),
        ["https://a.test/cb", "https://z.test/cb"]
    );
    assert!(store
        .callback_urls(b.organization_id)
        .await
        .unwrap()
        .is_empty());
    // Issue 19: the checks of a new instance, in one query: the same list
    // (in any order) and the cap check.
    let mut checks = store.creation_checks(a.organization_id, 1).await.unwrap();
    assert!(!checks.at_cap, "no instances yet");
    checks.callback_urls.sort();
    assert_eq!(
        checks.callback_urls,
        ["https://a.test/cb", "https://z.test/cb"]
    );
    assert!(
        store
            .creation_checks(a.organization_id, 0)
            .await
            .unwrap()
            .at_cap
    );
    assert_eq!(
        store.creation_checks(b.organization_id, 1).await.unwrap(),
        CreationChecks::default()
    );
    store
        .set_callback_urls(a.organization_id, &[])
        .await
        .unwrap();
    assert!(store
        .callback_urls(a.organization_id)
        .await
        .unwrap()
        .is_empty());

    // Two instances under k1.
    let config: Configuration = [("oauth.api.secret", "cfg-secret")].into_iter().collect();
    let mut ids = Vec::new();
    for (i, refresh) in [Some("rt-1"), None].into_iter().enumerate() {
        let created = store
            .create_instance(NewInstance {
                organization_id: a.organization_id,
                user_id: a.user.id,
                element_key: "hubspot".into(),
                element_id: 43,
                name: format!("i{i}"),
                tags: vec![],
                configuration: config.clone(),
                token_hash: hash_secret(&format!("token-{i}")),
                tokens: Tokens {
                    access_token: Some(Secret::new(format!("at-{i}"))),
                    refresh_token: refresh.map(Secret::new),
                    token_type: None,
                    expires_at: Some(1),
                },
            })
            .await
            .unwrap();
        ids.push(created.id);
    }
    for (cap, at_cap) in [(1, true), (2, true), (3, false)] {
        assert_eq!(
            store.creation_checks(a.organization_id, cap).await.unwrap(),
            CreationChecks {
                at_cap,
                callback_urls: vec![]
            },
            "cap {cap}"
        );
    }
    drop(store);

    // Rotation: new key first; rewrap; then the old key can go.
    let both = Keyring::new(vec![k2, k1]).unwrap();
    let store = connect(url, both.clone()).await.unwrap();
    let report = rewrap(store.as_ref(), &both).await.unwrap();
    assert_eq!((report.rewrapped, report.unchanged), (2, 0));
    let again = rewrap(store.as_ref(), &both).await.unwrap();
    assert_eq!((again.rewrapped, again.unchanged), (0, 2));
    drop(store);
    let store = connect(url, Keyring::new(vec![k2]).unwrap()).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        let got = store
            .instance(a.organization_id, *id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.tokens.access_token.unwrap().expose(), format!("at-{i}"));
        assert_eq!(got.configuration, config);
    }
    drop(store);
    match connect(url, Keyring::new(vec![k1]).unwrap()).await {
        Err(StoreError::Key(msg)) => assert!(msg.contains("does not match"), "{msg}"),
        other => panic!(
            "the retired key must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test]
async fn sqlite_admin_story() {
    let dir = tempfile::tempdir().unwrap();
    story(&format!(
        "sqlite://{}",
        dir.path().join("admin.db").display()
    ))
    .await;
}

#[tokio::test]
async fn postgres_admin_story() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    story(&pg.create_database("admin_story").unwrap()).await;
}
