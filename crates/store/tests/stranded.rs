//! Key rotation that leaves a row behind, on both engines: a process still
//! writing with the old key after the rewrap, then the old key retired. The
//! list still answers with every other row, the stranded one is named, and
//! rewrap reports it (and keeps the key check on the old key) until it is
//! rewrapped with the old key at hand again.

use elements_core::{Configuration, Secret};
use elements_store::{
    connect, hash_secret, rewrap, Instance, Keyring, NewAccount, NewInstance, Principal, Store,
    StoreError, Stranded, Tokens,
};
use elements_testkit::pg::PgCluster;

fn new_instance(owner: &Principal, name: &str, tags: &[&str], token: &str) -> NewInstance {
    let configuration: Configuration = [("oauth.api.secret", "cfg-secret")].into_iter().collect();
    NewInstance {
        organization_id: owner.organization_id,
        user_id: owner.user.id,
        element_key: "hubspot".into(),
        element_id: 43,
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        configuration,
        token_hash: hash_secret(token),
        tokens: Tokens {
            access_token: Some(Secret::new(format!("at-{name}"))),
            refresh_token: None,
            token_type: None,
            expires_at: None,
        },
    }
}

fn ids(list: &[Instance]) -> Vec<i64> {
    list.iter().map(|i| i.id).collect()
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

async fn story(url: &str) {
    let (k1, k2) = (Keyring::generate_key(), Keyring::generate_key());
    let old_only = Keyring::new(vec![k1]).unwrap();
    let both = Keyring::new(vec![k2, k1]).unwrap();
    let new_only = Keyring::new(vec![k2]).unwrap();
    let k1_id = old_only.current_key_id().to_owned();

    // A replica running with the old key only, before the rotation.
    let replica = connect(url, old_only.clone()).await.unwrap();
    let a = replica
        .create_account(NewAccount {
            organization_name: "a".into(),
            organization_secret_hash: hash_secret("org-a"),
            email: "a@test".into(),
            first_name: "F".into(),
            last_name: "L".into(),
            user_secret_hash: hash_secret("user-a"),
        })
        .await
        .unwrap();
    let x = replica
        .create_instance(new_instance(&a, "x", &["t"], "token-x"))
        .await
        .unwrap();

    // The rotation: rewrap under the new key; clean at that moment.
    let rotated = connect(url, both.clone()).await.unwrap();
    let report = rewrap(rotated.as_ref(), &both).await.unwrap();
    assert_eq!((report.rewrapped, report.unchanged), (1, 0));
    assert_eq!(report.stranded, vec![]);

    // The replica was never restarted: it still writes under the old key.
    let z = replica
        .create_instance(new_instance(&a, "z", &["t", "z"], "token-z"))
        .await
        .unwrap();
    let w = rotated
        .create_instance(new_instance(&a, "w", &["t"], "token-w"))
        .await
        .unwrap();
    drop(replica);
    drop(rotated);

    // The old key is retired: the start-up check passes (it was resealed
    // under the new key), the stranded row does not decrypt.
    let retired = connect(url, new_only.clone()).await.unwrap();
    let list = retired
        .list_instances(a.organization_id, &[])
        .await
        .unwrap();
    assert_eq!(ids(&list.instances), vec![w.id, x.id], "every other row");
    assert_eq!(
        list.instances[1].tokens.access_token,
        Some(Secret::new("at-x"))
    );
    assert_eq!(list.unreadable.len(), 1);
    assert_eq!(list.unreadable[0].id, z.id);
    match &list.unreadable[0].error {
        StoreError::Decrypt { what, reason } => {
            assert_eq!(what, &format!("instance:{}:configuration", z.id));
            assert!(
                reason.contains(&format!("key id {k1_id}, which is not in the keyring")),
                "{reason}"
            );
        }
        other => panic!("expected a Decrypt error, got {other:?}"),
    }
    // The tag filter applies to unreadable rows too (tags are in the clear).
    let only_z = retired
        .list_instances(a.organization_id, &tags(&["z"]))
        .await
        .unwrap();
    assert_eq!(ids(&only_z.instances), Vec::<i64>::new());
    assert_eq!(
        only_z.unreadable.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![z.id]
    );
    let none = retired
        .list_instances(a.organization_id, &tags(&["nope"]))
        .await
        .unwrap();
    assert!(none.instances.is_empty() && none.unreadable.is_empty());
    // The strict list fails on it; single reads fail alone.
    assert!(matches!(
        retired.instances(a.organization_id, &[]).await,
        Err(StoreError::Decrypt { .. })
    ));
    assert!(matches!(
        retired.instance(a.organization_id, z.id).await,
        Err(StoreError::Decrypt { .. })
    ));
    assert_eq!(
        retired
            .instance(a.organization_id, x.id)
            .await
            .unwrap()
            .map(|i| i.id),
        Some(x.id)
    );

    // Rewrap without the old key cannot fix it: it names the row and every
    // stranded column, never a value, and leaves the key check alone.
    let check_before = retired.meta("key_check").await.unwrap();
    let report = rewrap(retired.as_ref(), &new_only).await.unwrap();
    assert_eq!((report.rewrapped, report.unchanged), (0, 2));
    let stranded = |column: &'static str| Stranded {
        instance_id: z.id,
        column,
        key_id: k1_id.clone(),
        key_in_keyring: false,
    };
    assert_eq!(
        report.stranded,
        vec![
            stranded("instances.configuration_enc"),
            stranded("instances.access_token_enc"),
        ]
    );
    assert_eq!(retired.meta("key_check").await.unwrap(), check_before);
    drop(retired);

    // With the old key back (second), rewrap fixes it and is clean.
    let fixed = connect(url, both.clone()).await.unwrap();
    let report = rewrap(fixed.as_ref(), &both).await.unwrap();
    assert_eq!((report.rewrapped, report.unchanged), (1, 2));
    assert_eq!(report.stranded, vec![]);
    drop(fixed);
    let retired = connect(url, new_only).await.unwrap();
    let list = retired
        .list_instances(a.organization_id, &[])
        .await
        .unwrap();
    assert_eq!(ids(&list.instances), vec![w.id, z.id, x.id]);
    assert!(list.unreadable.is_empty());
    assert_eq!(
        list.instances[1].tokens.access_token,
        Some(Secret::new("at-z"))
    );
}

/// An empty database: nothing to rewrap, nothing stranded.
async fn empty_is_clean(url: &str) {
    let keyring = Keyring::new(vec![Keyring::generate_key()]).unwrap();
    let store: std::sync::Arc<dyn Store> = connect(url, keyring.clone()).await.unwrap();
    let report = rewrap(store.as_ref(), &keyring).await.unwrap();
    assert_eq!(report, Default::default(), "an empty database is clean");
}

#[tokio::test]
async fn sqlite_stranded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("stranded.db").display());
    story(&url).await;
    empty_is_clean(&format!(
        "sqlite://{}",
        dir.path().join("empty.db").display()
    ))
    .await;
}

#[tokio::test]
async fn postgres_stranded_rows() {
    let pg = PgCluster::shared().expect("postgres");
    story(&pg.create_database("stranded").unwrap()).await;
    empty_is_clean(&pg.create_database("stranded_empty").unwrap()).await;
}
