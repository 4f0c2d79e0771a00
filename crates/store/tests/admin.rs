//! The administrative parts of the store, on both engines: callback
//! allow-lists, the key check, and rewrapping secrets under a new key.

use elements_core::{Configuration, Secret};
use elements_store::{
    connect, hash_secret, rewrap, Keyring, NewAccount, NewInstance, StoreError, Tokens,
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
    // The cap checked by the insert itself (issue 19): two held, so a
    // third fits under 3 and not under 2; a refusal writes nothing.
    let capped = |n: usize| NewInstance {
        organization_id: a.organization_id,
        user_id: a.user.id,
        element_key: "hubspot".into(),
        element_id: 43,
        name: format!("capped-{n}"),
        tags: vec![],
        configuration: config.clone(),
        token_hash: hash_secret(&format!("capped-token-{n}")),
        tokens: Tokens::default(),
    };
    for cap in [0, 1, 2] {
        assert!(
            matches!(
                store
                    .create_instance_capped(capped(cap), Some(&a.user), cap as u64)
                    .await,
                Err(StoreError::InstanceCap)
            ),
            "cap {cap}"
        );
    }
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 2);
    let third = store
        .create_instance_capped(capped(3), Some(&a.user), 3)
        .await
        .unwrap();
    assert_eq!(third.name, "capped-3");
    assert_eq!(third.user, a.user);
    assert!(matches!(
        store.create_instance_capped(capped(4), None, 3).await,
        Err(StoreError::InstanceCap)
    ));
    // Another organization's instances do not count.
    let other = NewInstance {
        organization_id: b.organization_id,
        user_id: b.user.id,
        ..capped(5)
    };
    let other = store.create_instance_capped(other, None, 1).await.unwrap();
    assert_eq!(other.organization_id, b.organization_id);
    // (The rotation below counts the first two only.)
    assert!(store
        .delete_instance(b.organization_id, other.id)
        .await
        .unwrap());
    assert!(store
        .delete_instance(a.organization_id, third.id)
        .await
        .unwrap());
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 2);
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
