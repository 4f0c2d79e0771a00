//! Measures SQLite instance creation, rows per second, on this machine's disk
//! (WAL, `synchronous=FULL`, a fresh database file each time):
//!
//! - (a) a loop of single-row transactions on one connection: one `fsync`
//!   per insert, the ceiling of committing inserts one by one;
//! - (b) `CLIENTS` concurrent tasks calling `Store::create_instance` (which
//!   also encrypts, and reads the row back and decrypts it);
//! - (c) the same with one client: no load, no batching.
//!
//! ```text
//! cargo run --release -p elements-store --example group_commit -- [ROWS] [CLIENTS] [DIR]
//! ```
//!
//! Defaults: 4096 rows, 64 clients, the system's temporary directory.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use elements_core::{Configuration, Secret};
use elements_store::{connect, hash_secret, Keyring, NewAccount, NewInstance, Principal, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions as _;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args.first().map_or(4096, |a| a.parse().expect("ROWS"));
    let clients: usize = args.get(1).map_or(64, |a| a.parse().expect("CLIENTS"));
    let parent = args
        .get(2)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(&parent).expect("temporary directory");
    println!("databases in {}", dir.path().display());

    let a = single_row_transactions(&dir.path().join("a.db"), rows).await;
    println!("(a) single-row transactions, 1 connection:  {rows} rows, {a:.0} rows/s");
    let b = through_store(&dir.path().join("b.db"), rows, clients).await;
    println!(
        "(b) Store::create_instance, {clients} clients:  {rows} rows, {b:.0} rows/s ({:.1}x a)",
        b / a
    );
    let c = through_store(&dir.path().join("c.db"), rows.min(1024), 1).await;
    println!(
        "(c) Store::create_instance, 1 client:     {} rows, {c:.0} rows/s",
        rows.min(1024)
    );
    // The disk's fsync latency drifts: (a) again, for the bracket.
    let a2 = single_row_transactions(&dir.path().join("a2.db"), rows).await;
    println!(
        "(a) again:                                 {rows} rows, {a2:.0} rows/s ({:.1}x for b)",
        b / a2
    );
}

fn account() -> NewAccount {
    NewAccount {
        organization_name: "Bench".into(),
        organization_secret_hash: hash_secret("org"),
        email: "bench@example.com".into(),
        first_name: "B".into(),
        last_name: "B".into(),
        user_secret_hash: hash_secret("user"),
    }
}

fn new_instance(owner: &Principal, n: usize) -> NewInstance {
    let configuration: Configuration = [
        ("oauth.api.key", "client-id-public"),
        ("oauth.api.secret", "client-secret-0123456789abcdef"),
        (
            "oauth.callback.url",
            "https://app.example.com/oauth/callback",
        ),
    ]
    .into_iter()
    .collect();
    NewInstance {
        organization_id: owner.organization_id,
        user_id: owner.user.id,
        element_key: "hubspot".into(),
        element_id: 3166,
        name: format!("instance {n}"),
        tags: vec!["bench".into()],
        configuration,
        token_hash: hash_secret(&format!("instance-token-{n}")),
        tokens: elements_store::Tokens {
            access_token: Some(Secret::new(format!("access-token-{n}-0123456789abcdef"))),
            refresh_token: Some(Secret::new(format!("refresh-token-{n}-0123456789abcdef"))),
            token_type: Some("bearer".into()),
            expires_at: Some(1_900_000_000),
        },
    }
}

async fn fresh_store(db: &std::path::Path) -> (Arc<dyn Store>, Principal) {
    let url = format!("sqlite://{}", db.display());
    let store = connect(&url, Keyring::new(vec![Keyring::generate_key()]).unwrap())
        .await
        .expect("connect");
    let owner = store.create_account(account()).await.expect("account");
    (store, owner)
}

/// (a): the schema and account from the store, then plain inserts of rows
/// of the same shape and size (ciphertext stand-ins, random ids), one
/// transaction each.
async fn single_row_transactions(db: &std::path::Path, rows: usize) -> f64 {
    let (store, owner) = fresh_store(db).await;
    drop(store);
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await
        .unwrap();
    let sealed = "v1.0123456789abcdef.".to_owned() + &"x".repeat(200);
    let started = Instant::now();
    for n in 0..rows {
        sqlx::query(
            "INSERT INTO instances (id, seq, organization_id, user_id, element_key, \
             element_id, name, tags, configuration_enc, token_hash, access_token_enc, \
             refresh_token_enc, token_type, expires_at, valid, disabled, created_at, \
             updated_at, token_version) \
             SELECT ?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances \
             WHERE organization_id = u.organization_id), u.organization_id, \
             u.id, 'hubspot', 3166, ?2, '[\"bench\"]', ?3, ?4, ?3, ?3, 'bearer', 1900000000, \
             1, 0, ?5, ?5, 0 FROM users u WHERE u.id = ?6 AND u.organization_id = ?7",
        )
        // Random ids, as the store draws them (inserts land on random
        // pages of the table's b-tree, as they do in (b)).
        .bind(rand::random_range(1..(1i64 << 53)))
        .bind(format!("instance {n}"))
        .bind(&sealed)
        .bind(&hash_secret(&format!("instance-token-{n}"))[..])
        .bind(elements_store::now_millis())
        .bind(owner.user.id)
        .bind(owner.organization_id)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// (b), (c): `clients` tasks, each creating its share of `rows` in turn.
async fn through_store(db: &std::path::Path, rows: usize, clients: usize) -> f64 {
    let (store, owner) = fresh_store(db).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            let owner = owner.clone();
            tokio::spawn(async move {
                for n in (c..rows).step_by(clients) {
                    store
                        .create_instance(new_instance(&owner, n))
                        .await
                        .expect("create_instance");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    rows as f64 / started.elapsed().as_secs_f64()
}
