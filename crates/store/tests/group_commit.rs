//! Group commit of new instances on SQLite: concurrent creations share
//! transactions, yet each caller gets its own durable result.

use std::collections::HashSet;
use std::sync::Arc;

use elements_core::{Configuration, Secret};
use elements_store::{
    connect, hash_secret, Instance, Keyring, NewAccount, NewInstance, Principal, Store, StoreError,
    Tokens,
};

/// A store on a new SQLite file: the directory (kept while the test runs),
/// the URL and the key that reopen it, and the store.
struct Fresh {
    _dir: tempfile::TempDir,
    url: String,
    key: [u8; 32],
    store: Arc<dyn Store>,
}

async fn fresh_sqlite(file: &str) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(file).display());
    let key = Keyring::generate_key();
    let store = connect(&url, Keyring::new(vec![key]).unwrap())
        .await
        .unwrap();
    Fresh {
        _dir: dir,
        url,
        key,
        store,
    }
}

fn account(tag: &str) -> NewAccount {
    NewAccount {
        organization_name: format!("Org {tag}"),
        organization_secret_hash: hash_secret(&format!("org-{tag}-secret")),
        email: format!("{tag}@example.com"),
        first_name: "First".into(),
        last_name: "Last".into(),
        user_secret_hash: hash_secret(&format!("user-{tag}-secret")),
    }
}

fn new_instance(owner: &Principal, n: usize, token: &str) -> NewInstance {
    let configuration: Configuration = [
        ("oauth.api.key", "client-id"),
        ("oauth.api.secret", &*format!("config-secret-{n}")),
    ]
    .into_iter()
    .collect();
    NewInstance {
        organization_id: owner.organization_id,
        user_id: owner.user.id,
        element_key: "hubspot".into(),
        element_id: 3166,
        name: format!("instance {n}"),
        tags: vec![format!("n{n}")],
        configuration,
        token_hash: hash_secret(token),
        tokens: Tokens {
            access_token: Some(Secret::new(format!("access-{n}"))),
            refresh_token: Some(Secret::new(format!("refresh-{n}"))),
            token_type: Some("bearer".into()),
            expires_at: Some(1_900_000_000 + n as i64),
        },
    }
}

/// Starts every creation at once and collects the results in order.
async fn create_all(
    store: &Arc<dyn Store>,
    news: Vec<NewInstance>,
) -> Vec<Result<Instance, StoreError>> {
    let tasks: Vec<_> = news
        .into_iter()
        .map(|new| {
            let store = store.clone();
            tokio::spawn(async move { store.create_instance(new).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.expect("no panic"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_all_commit_and_survive_a_reconnect() {
    let Fresh {
        _dir,
        url,
        key,
        store,
    } = fresh_sqlite("gc.db").await;
    let owner = store.create_account(account("a")).await.unwrap();

    let news = (0..200)
        .map(|n| new_instance(&owner, n, &format!("instance-token-{n}")))
        .collect();
    let created: Vec<Instance> = create_all(&store, news)
        .await
        .into_iter()
        .map(|r| r.expect("every creation succeeds"))
        .collect();
    let ids: HashSet<i64> = created.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 200, "distinct ids");
    for (n, instance) in created.iter().enumerate() {
        assert_eq!(instance.name, format!("instance {n}"));
        assert_eq!(
            instance.tokens.access_token,
            Some(Secret::new(format!("access-{n}")))
        );
    }
    drop(store);

    // A new process, in effect: a new pool, a new keyring with the same key.
    let store = connect(&url, Keyring::new(vec![key]).unwrap())
        .await
        .unwrap();
    for instance in &created {
        assert_eq!(
            store
                .instance(owner.organization_id, instance.id)
                .await
                .unwrap()
                .as_ref(),
            Some(instance)
        );
    }
    let listed = store.instances(owner.organization_id, &[]).await.unwrap();
    assert_eq!(listed.len(), 200);
    let listed_ids: HashSet<i64> = listed.iter().map(|i| i.id).collect();
    assert_eq!(listed_ids, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_row_does_not_fail_its_neighbours() {
    let Fresh { _dir, store, .. } = fresh_sqlite("gc.db").await;
    let owner = store.create_account(account("a")).await.unwrap();
    let other = store.create_account(account("b")).await.unwrap();

    // One burst: two creations with the same instance token (exactly one
    // wins), one by a user of another organization, the rest fine.
    let mut news: Vec<NewInstance> = (0..64)
        .map(|n| new_instance(&owner, n, &format!("token-{n}")))
        .collect();
    news[40].token_hash = hash_secret("token-10");
    news[50].user_id = other.user.id;
    let results = create_all(&store, news).await;

    let twins: Vec<&Result<Instance, StoreError>> = vec![&results[10], &results[40]];
    assert_eq!(
        twins.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one of the twins: {twins:?}"
    );
    assert_eq!(
        twins
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
            .count(),
        1,
        "{twins:?}"
    );
    assert!(
        matches!(&results[50], Err(StoreError::Conflict(m)) if m.contains("not a member")),
        "{:?}",
        results[50]
    );
    for (n, result) in results.iter().enumerate() {
        if n != 10 && n != 40 && n != 50 {
            let instance = result.as_ref().expect("a neighbour succeeds");
            assert_eq!(instance.name, format!("instance {n}"));
        }
    }
    let stored = store.instances(owner.organization_id, &[]).await.unwrap();
    assert_eq!(stored.len(), 62, "62 rows: the failures left nothing");
    assert!(store
        .instances(other.organization_id, &[])
        .await
        .unwrap()
        .is_empty());
}

/// Issue 19: the per-organization cap check answers like a full count,
/// batches, deletions and other organizations included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_instance_cap_check_agrees_with_the_count() {
    let Fresh { _dir, store, .. } = fresh_sqlite("cap.db").await;
    let a = store.create_account(account("cap-a")).await.unwrap();
    let b = store.create_account(account("cap-b")).await.unwrap();
    assert!(!store
        .has_at_least_instances(a.organization_id, 1)
        .await
        .unwrap());
    assert!(store
        .has_at_least_instances(a.organization_id, 0)
        .await
        .unwrap());

    // 40 at once (shared transactions), 3 in the other organization.
    let news = (0..40)
        .map(|n| new_instance(&a, n, &format!("cap-a-{n}")))
        .collect();
    let created: Vec<Instance> = create_all(&store, news)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let news = (0..3)
        .map(|n| new_instance(&b, n, &format!("cap-b-{n}")))
        .collect();
    for r in create_all(&store, news).await {
        r.unwrap();
    }
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 40);
    for (cap, expected) in [
        (1, true),
        (39, true),
        (40, true),
        (41, false),
        (u64::MAX, false),
    ] {
        assert_eq!(
            store
                .has_at_least_instances(a.organization_id, cap)
                .await
                .unwrap(),
            expected,
            "cap {cap}"
        );
    }
    assert!(store
        .has_at_least_instances(b.organization_id, 3)
        .await
        .unwrap());
    assert!(!store
        .has_at_least_instances(b.organization_id, 4)
        .await
        .unwrap());

    // Deleting makes room even though the newest `seq` stays at 40.
    for instance in &created[..5] {
        assert!(store
            .delete_instance(a.organization_id, instance.id)
            .await
            .unwrap());
    }
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 35);
    assert!(store
        .has_at_least_instances(a.organization_id, 35)
        .await
        .unwrap());
    assert!(!store
        .has_at_least_instances(a.organization_id, 36)
        .await
        .unwrap());
    assert!(!store
        .has_at_least_instances(a.organization_id, 40)
        .await
        .unwrap());
}

/// Issue 19: the cap checked by the writer itself. Concurrent capped
/// creations share transactions, yet exactly as many fit as the cap leaves
/// room for, whatever the batching; rows of another organization in the
/// same batches are unaffected; deleting makes room again although the
/// organization's highest `seq` stays where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_writer_holds_the_instance_cap_exactly() {
    let Fresh { _dir, store, .. } = fresh_sqlite("capped.db").await;
    let a = store.create_account(account("capped-a")).await.unwrap();
    let b = store.create_account(account("capped-b")).await.unwrap();
    let create = |owner: &Principal, from: usize, to: usize, cap: u64| {
        let tasks: Vec<_> = (from..to)
            .map(|n| {
                let (store, owner) = (store.clone(), owner.clone());
                tokio::spawn(async move {
                    let new =
                        new_instance(&owner, n, &format!("capped-{}-{n}", owner.organization_id));
                    store
                        .create_instance_capped(new, Some(&owner.user), cap)
                        .await
                })
            })
            .collect();
        async move {
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            results
        }
    };
    let tally = |results: &[Result<Instance, StoreError>]| {
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let capped = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::InstanceCap)))
            .count();
        assert_eq!(
            ok + capped,
            results.len(),
            "only successes and cap refusals"
        );
        (ok, capped)
    };

    // 60 requests at a cap of 25 while another organization's 20 (cap 100)
    // go through the same writer.
    let (in_a, in_b) = tokio::join!(create(&a, 0, 60, 25), create(&b, 0, 20, 100));
    assert_eq!(tally(&in_a), (25, 35));
    assert_eq!(tally(&in_b), (20, 0));
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 25);
    assert_eq!(store.count_instances(b.organization_id).await.unwrap(), 20);

    // Full: nothing more fits, one request or many.
    assert_eq!(tally(&create(&a, 60, 61, 25).await), (0, 1));
    // Three deleted: exactly three of ten fit, though `seq` is still 25.
    let mine = store.instances(a.organization_id, &[]).await.unwrap();
    for instance in &mine[..3] {
        assert!(store
            .delete_instance(a.organization_id, instance.id)
            .await
            .unwrap());
    }
    assert_eq!(tally(&create(&a, 61, 71, 25).await), (3, 7));
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 25);
    // A larger cap makes room at once.
    assert_eq!(tally(&create(&a, 71, 81, 30).await), (5, 5));
    assert_eq!(store.count_instances(a.organization_id).await.unwrap(), 30);
}
