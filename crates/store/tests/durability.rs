//! The durability settings the store actually runs with, read back from the
//! database through the store's own connections: SQLite in WAL mode with
//! `synchronous=FULL` on the pool's connections and on the group-commit
//! writer's; PostgreSQL with `synchronous_commit=on` even though the test
//! cluster's default is `off`.

use elements_store::{connect, Durability, DurabilitySetting, Keyring};
use elements_testkit::pg::PgCluster;
use sqlx::Connection as _;

fn setting(connection: &'static str, name: &'static str, value: &str) -> DurabilitySetting {
    DurabilitySetting {
        connection,
        name,
        value: value.into(),
    }
}

#[tokio::test]
async fn sqlite_runs_wal_with_synchronous_full_on_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("durable.db").display());
    let store = connect(&url, Keyring::new(vec![Keyring::generate_key()]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.durability().await.unwrap(),
        Durability {
            engine: "sqlite",
            settings: vec![
                setting("pool", "journal_mode", "wal"),
                setting("pool", "synchronous", "2"),
                setting("writer", "journal_mode", "wal"),
                setting("writer", "synchronous", "2"),
            ],
        }
    );
}

#[tokio::test]
async fn postgres_commits_synchronously_whatever_the_server_default() {
    let pg = PgCluster::shared().expect("postgres");
    let url = pg.create_database("durability").unwrap();
    // The throwaway cluster runs with synchronous_commit=off...
    let mut plain = sqlx::PgConnection::connect(&url).await.unwrap();
    let default: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(default, "off");
    // ...the store's own connections override it.
    let store = connect(&url, Keyring::new(vec![Keyring::generate_key()]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.durability().await.unwrap(),
        Durability {
            engine: "postgres",
            settings: vec![setting("pool", "synchronous_commit", "on")],
        }
    );
}
