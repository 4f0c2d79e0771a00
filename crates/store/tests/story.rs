//! The store story: one conformance scenario, run on SQLite (a temporary
//! file) and on PostgreSQL (a throwaway cluster from the machine's own
//! binaries). Both always run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elements_core::{Configuration, Secret};
use elements_store::{
    connect, hash_secret, Instance, InstancePatch, Keyring, NewAccount, NewInstance, Principal,
    RefreshDecision, RefreshJob, StoreError, Tokens,
};
use elements_testkit::pg::PgCluster;

const ACCESS: &str = "ACCESS-PLAINTEXT-5f1c0e";
const REFRESH: &str = "REFRESH-PLAINTEXT-9a7d42";
const CONFIG_SECRET: &str = "CONFIG-SECRET-c0ffee77";
const INSTANCE_TOKEN: &str = "INSTANCE-TOKEN-PLAINTEXT-1";

/// Everything that must never reach the disk in plaintext.
const PLAINTEXTS: &[&str] = &[
    ACCESS,
    REFRESH,
    CONFIG_SECRET,
    INSTANCE_TOKEN,
    "org-a-secret",
    "user-a-secret",
    "ACCESS-v",
    "REFRESH-v",
];

fn now_secs() -> i64 {
    elements_store::now_millis() / 1000
}

fn account(tag: &str) -> NewAccount {
    NewAccount {
        organization_name: format!("Org {tag}"),
        organization_secret_hash: hash_secret(&format!("org-{tag}-secret")),
        email: format!("{tag}@example.com"),
        first_name: format!("First {tag}"),
        last_name: format!("Last {tag}"),
        user_secret_hash: hash_secret(&format!("user-{tag}-secret")),
    }
}

fn config() -> Configuration {
    [
        ("oauth.api.key", "client-id-public"),
        ("oauth.api.secret", CONFIG_SECRET),
        ("oauth.callback.url", "https://app.test/cb"),
    ]
    .into_iter()
    .collect()
}

fn new_instance(
    owner: &Principal,
    name: &str,
    tags: &[&str],
    token: &str,
    tokens: Tokens,
) -> NewInstance {
    NewInstance {
        organization_id: owner.organization_id,
        user_id: owner.user.id,
        element_key: "hubspot".into(),
        element_id: 3166,
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        configuration: config(),
        token_hash: hash_secret(token),
        tokens,
    }
}

fn tokens(access: &str, refresh: Option<&str>, expires_at: i64) -> Tokens {
    Tokens {
        access_token: Some(Secret::new(access)),
        refresh_token: refresh.map(Secret::new),
        token_type: Some("bearer".into()),
        expires_at: Some(expires_at),
    }
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| t.to_string()).collect()
}

fn ids(list: &[Instance]) -> Vec<i64> {
    list.iter().map(|i| i.id).collect()
}

/// A job that records what it saw and answers `decision`.
fn job<'a>(seen: Arc<Mutex<Vec<Instance>>>, decision: RefreshDecision) -> RefreshJob<'a> {
    Box::new(move |instance| {
        Box::pin(async move {
            seen.lock().unwrap().push(instance);
            decision
        })
    })
}

/// Fails if any file holds one of the plaintexts.
fn assert_no_plaintext(files: &[PathBuf]) {
    let mut scanned = 0;
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        scanned += bytes.len();
        for secret in PLAINTEXTS {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the plaintext {secret:?}",
                file.display()
            );
        }
    }
    assert!(scanned > 0, "no database file to scan among {files:?}");
}

/// The scenario. `files` are the database's files on disk, if it has any
/// we can read (SQLite).
async fn store_story(url: &str, engine: &str, files: &[PathBuf]) {
    let k1 = Keyring::generate_key();
    let keyring = Keyring::new(vec![k1]).unwrap();
    let store = connect(url, keyring.clone()).await.expect("connect");
    assert_eq!(store.engine(), engine);

    // --- Accounts --------------------------------------------------------
    assert_eq!(store.organization_count().await.unwrap(), 0);
    let a = store.create_account(account("a")).await.unwrap();
    let b = store.create_account(account("b")).await.unwrap();
    assert_ne!(a.organization_id, b.organization_id);
    assert_eq!(a.organization_name, "Org a");
    assert_eq!(a.user.email, "a@example.com");
    assert_eq!(store.organization_count().await.unwrap(), 2);

    let mut reused_org = account("c");
    reused_org.organization_secret_hash = hash_secret("org-a-secret");
    assert!(matches!(
        store.create_account(reused_org).await,
        Err(StoreError::Conflict(_))
    ));
    let mut reused_user = account("d");
    reused_user.user_secret_hash = hash_secret("user-b-secret");
    assert!(matches!(
        store.create_account(reused_user).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.organization_count().await.unwrap(),
        2,
        "failed creations left nothing"
    );

    let user_a = hash_secret("user-a-secret");
    let org_a = hash_secret("org-a-secret");
    assert_eq!(
        store.authenticate(&user_a, &org_a).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store
            .authenticate(&user_a, &hash_secret("org-b-secret"))
            .await
            .unwrap(),
        None,
        "user A with org B's secret"
    );
    assert_eq!(
        store
            .authenticate(&user_a, &hash_secret("wrong"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .authenticate(&hash_secret("nobody"), &org_a)
            .await
            .unwrap(),
        None
    );

    // --- Instances -------------------------------------------------------
    let soon = now_secs() + 600;
    let later = now_secs() + 3600;
    let i1 = store
        .create_instance(new_instance(
            &a,
            "first",
            &["prod", "crm"],
            INSTANCE_TOKEN,
            tokens(ACCESS, Some(REFRESH), later),
        ))
        .await
        .unwrap();
    assert!(i1.id > 0 && i1.id < (1 << 53));
    assert_eq!(i1.organization_id, a.organization_id);
    assert_eq!(i1.user, a.user);
    assert_eq!(i1.element_key, "hubspot");
    assert_eq!(i1.element_id, 3166);
    assert_eq!(i1.name, "first");
    assert_eq!(i1.tags, tags(&["prod", "crm"]));
    assert_eq!(i1.configuration, config());
    assert_eq!(i1.tokens, tokens(ACCESS, Some(REFRESH), later));
    assert!(i1.valid && !i1.disabled);
    assert_eq!(i1.invalid_reason, None);
    assert_eq!(i1.token_version, 0);
    assert!(i1.created_at > 0 && i1.updated_at == i1.created_at);

    // Issue 19: created by a known user, the instance is answered from what
    // was written, not read back: exactly what a read answers. A creator
    // that is not the row's user is not trusted (the row is read back).
    let by = store
        .create_instance_by(
            new_instance(
                &a,
                "by a",
                &["by"],
                "instance-token-by",
                tokens("access-by", Some("refresh-by"), later),
            ),
            &a.user,
        )
        .await
        .unwrap();
    assert_eq!(
        store.instance(a.organization_id, by.id).await.unwrap(),
        Some(by.clone())
    );
    assert_eq!(by.user, a.user);
    assert_eq!(by.tokens, tokens("access-by", Some("refresh-by"), later));
    assert!(by.valid && !by.disabled && by.token_version == 0);
    let mut stranger = a.user.clone();
    stranger.id = b.user.id;
    stranger.email = "not-the-creator@example.com".into();
    let by_wrong = store
        .create_instance_by(
            new_instance(
                &a,
                "by wrong",
                &[],
                "instance-token-by-2",
                Tokens::default(),
            ),
            &stranger,
        )
        .await
        .unwrap();
    assert_eq!(by_wrong.user, a.user, "read back, not the caller's user");
    assert_eq!(
        store
            .instance(a.organization_id, by_wrong.id)
            .await
            .unwrap(),
        Some(by_wrong.clone())
    );
    // A creator of another organization is refused as by create_instance.
    let mut foreign = new_instance(&a, "x", &[], "instance-token-by-3", Tokens::default());
    foreign.user_id = b.user.id;
    assert!(matches!(
        store.create_instance_by(foreign, &b.user).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .delete_instance(a.organization_id, by.id)
        .await
        .unwrap());
    assert!(store
        .delete_instance(a.organization_id, by_wrong.id)
        .await
        .unwrap());

    let i2 = store
        .create_instance(new_instance(
            &a,
            "second",
            &["prod"],
            "instance-token-2",
            tokens("access-2", Some("refresh-2"), soon),
        ))
        .await
        .unwrap();
    let i3 = store
        .create_instance(new_instance(
            &a,
            "third",
            &[],
            "instance-token-3",
            tokens("access-3", None, soon),
        ))
        .await
        .unwrap();
    let empty = store
        .create_instance(NewInstance {
            configuration: Configuration::new(),
            tokens: Tokens::default(),
            ..new_instance(&b, "b's", &["prod"], "instance-token-b", Tokens::default())
        })
        .await
        .unwrap();
    assert_eq!(empty.tokens, Tokens::default());
    assert!(empty.configuration.is_empty());

    // The same instance token twice, or a user of another organization.
    assert!(matches!(
        store
            .create_instance(new_instance(
                &a,
                "dup",
                &[],
                INSTANCE_TOKEN,
                Tokens::default()
            ))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut foreign_user = new_instance(&a, "x", &[], "instance-token-x", Tokens::default());
    foreign_user.user_id = b.user.id;
    assert!(store.create_instance(foreign_user).await.is_err());

    assert_eq!(
        store.instance(a.organization_id, i1.id).await.unwrap(),
        Some(i1.clone())
    );
    assert_eq!(store.instance_any(i1.id).await.unwrap(), Some(i1.clone()));
    assert_eq!(
        store
            .instance_by_token(&hash_secret(INSTANCE_TOKEN))
            .await
            .unwrap(),
        Some(i1.clone())
    );
    assert_eq!(
        store
            .instance_by_token(&hash_secret("no such token"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.instance(a.organization_id, 12345).await.unwrap(),
        None
    );

    // Listing: newest first, every tag must match.
    let all = store.instances(a.organization_id, &[]).await.unwrap();
    assert_eq!(ids(&all), vec![i3.id, i2.id, i1.id]);
    assert_eq!(all[2], i1);
    assert_eq!(
        ids(&store
            .instances(a.organization_id, &tags(&["prod"]))
            .await
            .unwrap()),
        vec![i2.id, i1.id]
    );
    assert_eq!(
        ids(&store
            .instances(a.organization_id, &tags(&["prod", "crm"]))
            .await
            .unwrap()),
        vec![i1.id]
    );
    assert!(store
        .instances(a.organization_id, &tags(&["prod", "nope"]))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&store.instances(b.organization_id, &[]).await.unwrap()),
        vec![empty.id]
    );

    // --- Tenant isolation ------------------------------------------------
    assert_eq!(
        store.instance(b.organization_id, i1.id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .update_instance(
                b.organization_id,
                i1.id,
                InstancePatch {
                    name: Some("hijacked".into()),
                    disabled: Some(true),
                    ..Default::default()
                }
            )
            .await
            .unwrap(),
        None
    );
    assert!(!store
        .delete_instance(b.organization_id, i1.id)
        .await
        .unwrap());
    assert_eq!(
        store.instance(a.organization_id, i1.id).await.unwrap(),
        Some(i1.clone())
    );

    // --- Patches ---------------------------------------------------------
    let renamed = store
        .update_instance(
            a.organization_id,
            i1.id,
            InstancePatch {
                name: Some("renamed".into()),
                tags: Some(tags(&["crm", "eu"])),
                disabled: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    assert_eq!(renamed.tags, tags(&["crm", "eu"]));
    assert!(!renamed.disabled);
    assert_eq!(renamed.tokens, i1.tokens);
    assert_eq!(renamed.configuration, i1.configuration);
    assert!(renamed.updated_at >= i1.updated_at);
    assert_eq!(renamed.created_at, i1.created_at);
    let disabled = store
        .update_instance(
            a.organization_id,
            i1.id,
            InstancePatch {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(disabled.disabled);
    assert_eq!(disabled.name, "renamed");
    assert_eq!(
        ids(&store
            .instances(a.organization_id, &tags(&["prod"]))
            .await
            .unwrap()),
        vec![i2.id]
    );

    // --- Expiring --------------------------------------------------------
    // i1 is disabled, i3 has no refresh token, b's has no expiry.
    let horizon = now_secs() + 7200;
    assert_eq!(
        store.expiring_before(horizon, 10).await.unwrap(),
        vec![i2.id]
    );
    store
        .update_instance(
            a.organization_id,
            i1.id,
            InstancePatch {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.expiring_before(horizon, 10).await.unwrap(),
        vec![i2.id, i1.id],
        "soonest first"
    );
    assert_eq!(
        store.expiring_before(horizon, 1).await.unwrap(),
        vec![i2.id]
    );
    assert!(store
        .expiring_before(now_secs(), 10)
        .await
        .unwrap()
        .is_empty());

    // --- Refresh under the lock -----------------------------------------
    let seen = Arc::new(Mutex::new(Vec::new()));
    let new_expiry = now_secs() + 7000;

    // An update without a refresh token keeps the stored one.
    let after = store
        .refresh_locked(
            i1.id,
            30,
            job(
                seen.clone(),
                RefreshDecision::Update(tokens("ACCESS-v1", None, new_expiry)),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().pop().unwrap().tokens.access_token,
        Some(Secret::new(ACCESS))
    );
    assert_eq!(after.tokens.access_token, Some(Secret::new("ACCESS-v1")));
    assert_eq!(
        after.tokens.refresh_token,
        Some(Secret::new(REFRESH)),
        "kept"
    );
    assert_eq!(after.tokens.expires_at, Some(new_expiry));
    assert_eq!(after.token_version, 1);
    assert_eq!(
        store.instance_any(i1.id).await.unwrap(),
        Some(after.clone())
    );

    // Unchanged writes nothing.
    let unchanged = store
        .refresh_locked(i1.id, 30, job(seen.clone(), RefreshDecision::Unchanged))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged, after);

    // Twenty concurrent refreshers run strictly one at a time, each seeing
    // the version the previous one wrote.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let versions = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        let in_flight = in_flight.clone();
        let max_in_flight = max_in_flight.clone();
        let versions = versions.clone();
        let id = i1.id;
        tasks.push(tokio::spawn(async move {
            let job: RefreshJob<'_> = Box::new(move |instance: Instance| {
                Box::pin(async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    // Give an overlapping refresher every chance to show up.
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let v = instance.token_version;
                    versions.lock().unwrap().push(v);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    RefreshDecision::Update(tokens(
                        &format!("ACCESS-v{}", v + 1),
                        Some(&format!("REFRESH-v{}", v + 1)),
                        new_expiry,
                    ))
                })
            });
            store.refresh_locked(id, 30, job).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap().unwrap();
    }
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        1,
        "refreshers overlapped"
    );
    let mut versions = versions.lock().unwrap().clone();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=20).collect::<Vec<i64>>(),
        "each saw its predecessor's write"
    );
    let i1_now = store
        .instance(a.organization_id, i1.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i1_now.token_version, 21);
    assert_eq!(i1_now.tokens.access_token, Some(Secret::new("ACCESS-v21")));
    assert_eq!(
        i1_now.tokens.refresh_token,
        Some(Secret::new("REFRESH-v21"))
    );

    // A refresher that is cancelled mid-job releases the lock at once: the
    // next one, which gives up after about five seconds, gets it.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let store = store.clone();
        let id = i2.id;
        tokio::spawn(async move {
            let job: RefreshJob<'_> = Box::new(move |_| {
                Box::pin(async move {
                    let _ = entered_tx.send(());
                    std::future::pending::<RefreshDecision>().await
                })
            });
            store.refresh_locked(id, 3600, job).await
        })
    };
    entered_rx.await.unwrap();
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    let after_cancel = store
        .refresh_locked(i2.id, 2, job(seen.clone(), RefreshDecision::Unchanged))
        .await
        .expect("the cancelled holder released the lock")
        .unwrap();
    assert_eq!(after_cancel.token_version, 0);

    // A holder that hangs (never finishes, never releases) loses the lock
    // when its lease runs out.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let hung_job: RefreshJob<'_> = Box::new(move |_| {
        Box::pin(async move {
            let _ = entered_tx.send(());
            std::future::pending::<RefreshDecision>().await
        })
    });
    let mut hung = Box::pin(store.refresh_locked(i3.id, 1, hung_job));
    tokio::select! {
        _ = &mut hung => panic!("the hung job finished"),
        _ = entered_rx => {}
    }
    // Neither dropped nor polled again: like a stuck process.
    std::mem::forget(hung);
    let after_hang = store
        .refresh_locked(
            i3.id,
            30,
            job(
                seen.clone(),
                RefreshDecision::Update(tokens("access-3b", None, soon)),
            ),
        )
        .await
        .expect("the hung holder's lease expired")
        .unwrap();
    assert_eq!(after_hang.token_version, 1);
    assert_eq!(
        after_hang.tokens.access_token,
        Some(Secret::new("access-3b"))
    );
    assert_eq!(after_hang.tokens.refresh_token, None);

    // Invalidate marks the instance invalid; it is no longer refreshed.
    let invalid = store
        .refresh_locked(
            i2.id,
            30,
            job(
                seen.clone(),
                RefreshDecision::Invalidate("invalid_grant: refresh token revoked".into()),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!invalid.valid);
    assert_eq!(
        invalid.invalid_reason.as_deref(),
        Some("invalid_grant: refresh token revoked")
    );
    assert_eq!(invalid.tokens, i2.tokens, "tokens untouched");
    assert_eq!(
        store.expiring_before(horizon, 10).await.unwrap(),
        vec![i1.id]
    );

    // No such instance: no job, None.
    seen.lock().unwrap().clear();
    assert_eq!(
        store
            .refresh_locked(777, 30, job(seen.clone(), RefreshDecision::Unchanged))
            .await
            .unwrap(),
        None
    );
    assert!(seen.lock().unwrap().is_empty());

    // --- Delete ----------------------------------------------------------
    assert!(store
        .delete_instance(a.organization_id, i3.id)
        .await
        .unwrap());
    assert!(!store
        .delete_instance(a.organization_id, i3.id)
        .await
        .unwrap());
    assert_eq!(
        store.instance(a.organization_id, i3.id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .instance_by_token(&hash_secret("instance-token-3"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ids(&store.instances(a.organization_id, &[]).await.unwrap()),
        vec![i2.id, i1.id]
    );

    // --- Nothing secret on disk -----------------------------------------
    if !files.is_empty() {
        assert_no_plaintext(files);
    }
    drop(store);

    // --- Reconnect: everything decrypts ---------------------------------
    let store = connect(url, keyring.clone()).await.expect("reconnect");
    assert_eq!(store.organization_count().await.unwrap(), 2);
    assert_eq!(
        store.authenticate(&user_a, &org_a).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.instance(a.organization_id, i1.id).await.unwrap(),
        Some(i1_now.clone())
    );
    assert_eq!(
        store
            .instance_by_token(&hash_secret(INSTANCE_TOKEN))
            .await
            .unwrap(),
        Some(i1_now.clone())
    );
    drop(store);

    // --- Rotation: a new key first, the old one kept ---------------------
    let k2 = Keyring::generate_key();
    let rotated = Keyring::new(vec![k2, k1]).unwrap();
    let store = connect(url, rotated).await.unwrap();
    assert_eq!(
        store.instance(a.organization_id, i1.id).await.unwrap(),
        Some(i1_now.clone())
    );
    let rewritten = store
        .refresh_locked(
            i1.id,
            30,
            job(
                seen.clone(),
                RefreshDecision::Update(tokens("ACCESS-v22", Some("REFRESH-v22"), new_expiry)),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    drop(store);
    // With only the new key the database is refused at connect (the key
    // check was sealed with the old one)...
    match connect(url, Keyring::new(vec![k2]).unwrap()).await {
        Err(StoreError::Key(msg)) => assert!(msg.contains("does not match"), "{msg}"),
        other => panic!("expected a key error, got {:?}", other.map(|_| ())),
    }
    // ...and, past that check, the new tokens decrypt but the configuration
    // (still under the old key) does not.
    let store = elements_store::connect_without_key_check(url, Keyring::new(vec![k2]).unwrap())
        .await
        .unwrap();
    match store.instance(a.organization_id, i1.id).await {
        Err(StoreError::Decrypt { what, reason }) => {
            assert_eq!(what, format!("instance:{}:configuration", i1.id));
            assert!(reason.contains("not in the keyring"), "{reason}");
        }
        other => panic!("expected a Decrypt error, got {other:?}"),
    }
    drop(store);
    let store = connect(url, Keyring::new(vec![k2, k1]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.instance(a.organization_id, i1.id).await.unwrap(),
        Some(rewritten)
    );
    drop(store);

    // --- A wrong key is an error, never garbage -------------------------
    let wrong = Keyring::new(vec![Keyring::generate_key()]).unwrap();
    assert!(matches!(
        connect(url, wrong.clone()).await.map(|_| ()),
        Err(StoreError::Key(_))
    ));
    let store = elements_store::connect_without_key_check(url, wrong)
        .await
        .unwrap();
    assert_eq!(
        store.organization_count().await.unwrap(),
        2,
        "no secrets needed"
    );
    for result in [
        store.instance(a.organization_id, i1.id).await.map(|_| ()),
        store.instance_any(i2.id).await.map(|_| ()),
        store.instances(a.organization_id, &[]).await.map(|_| ()),
        store
            .instance_by_token(&hash_secret(INSTANCE_TOKEN))
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("not in the keyring"), "{msg}");
        for secret in PLAINTEXTS {
            assert!(!msg.contains(secret), "{msg}");
        }
    }
    // Refreshing fails before the job runs.
    seen.lock().unwrap().clear();
    let err = store
        .refresh_locked(i1.id, 30, job(seen.clone(), RefreshDecision::Unchanged))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    assert!(seen.lock().unwrap().is_empty());
    drop(store);

    if !files.is_empty() {
        assert_no_plaintext(files);
    }
}

fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    vec![
        db.to_path_buf(),
        db.with_file_name(format!("{name}-wal")),
        db.with_file_name(format!("{name}-shm")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_story() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the store creates it.
    let db = dir.path().join("data").join("nested").join("elements.db");
    let url = format!("sqlite://{}", db.display());
    assert!(url.starts_with("sqlite:///"), "an absolute path: {url}");
    store_story(&url, "sqlite", &sqlite_files(&db)).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the database file is private: {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_story() {
    let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
    let url = pg.create_database("story").unwrap();
    store_story(&url, "postgres", &[]).await;
}

#[tokio::test]
async fn sqlite_in_memory_and_bad_urls() {
    let keyring = Keyring::new(vec![Keyring::generate_key()]).unwrap();
    let store = connect("sqlite::memory:", keyring.clone()).await.unwrap();
    let a = store.create_account(account("m")).await.unwrap();
    let i = store
        .create_instance(new_instance(
            &a,
            "mem",
            &["x"],
            "t",
            tokens("a", Some("r"), 1),
        ))
        .await
        .unwrap();
    assert_eq!(
        store.instance(a.organization_id, i.id).await.unwrap(),
        Some(i)
    );
    assert_eq!(store.organization_count().await.unwrap(), 1);

    for bad in [
        "mysql://localhost/db",
        "",
        "elements.db",
        "sqlite://",
        "sqlite:",
    ] {
        assert!(
            matches!(
                connect(bad, keyring.clone()).await,
                Err(StoreError::InvalidUrl(_))
            ),
            "{bad:?}"
        );
    }
}
