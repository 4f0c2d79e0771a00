//! The PostgreSQL engine, for several replicas sharing one database.
//!
//! The refresh lock is a row lock (`SELECT ... FOR UPDATE`) held in a
//! transaction for the length of the job: a crashed holder's connection drops
//! and the lock with it; a hung one is cut off by
//! `idle_in_transaction_session_timeout` after the lease length.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;

use crate::common::{
    conflict, db_err, has_tags, lease_millis, lock_wait_millis, migrate_err, random_id,
    seal_configuration, seal_tokens, tags_json, unique_violation, RawInstance, ID_ATTEMPTS,
    INSTANCE_COLUMNS, INSTANCE_FROM,
};
use crate::{
    now_millis, Instance, InstancePatch, Keyring, NewAccount, NewInstance, Principal,
    RefreshDecision, RefreshJob, Result, SealedRow, SecretHash, Store, StoreError, User,
};

/// The PostgreSQL store.
pub(crate) struct PgStore {
    pool: PgPool,
    keyring: Arc<Keyring>,
}

impl PgStore {
    /// Connects to the database named by `url` (`postgres://` or
    /// `postgresql://`) and runs the migrations.
    pub(crate) async fn connect(url: &str, keyring: Arc<Keyring>) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::InvalidUrl("malformed postgres URL".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(migrate_err)?;
        tracing::debug!(key_id = keyring.current_key_id(), "postgres store ready");
        Ok(PgStore { pool, keyring })
    }

    async fn fetch(&self, id: i64) -> Result<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = $1");
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn fetch_in(&self, conn: &mut PgConnection, id: i64) -> Result<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = $1");
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }
}

/// Takes instance `id`'s row lock in the transaction on `conn` and reads the
/// row. Waits for another holder at most as long as the SQLite engine would,
/// and cuts this session off if the job outlives its lease (the lock is then
/// released and nothing is written); both settings end with the transaction.
async fn lock_row(
    conn: &mut PgConnection,
    id: i64,
    lease_seconds: i64,
) -> Result<Option<RawInstance>> {
    let wait = lock_wait_millis(lease_seconds);
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), \
         set_config('idle_in_transaction_session_timeout', $2, true)",
    )
    .bind(wait.to_string())
    .bind(lease_millis(lease_seconds).to_string())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = $1 FOR UPDATE OF i");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                StoreError::Database(format!(
                    "timed out after {wait} ms waiting for the refresh lock of instance {id}"
                ))
            }
            _ => db_err(e),
        })
}

/// Writes a refresh decision in the transaction on `conn`.
async fn apply_decision(
    conn: &mut PgConnection,
    keyring: &Keyring,
    id: i64,
    decision: RefreshDecision,
) -> Result<()> {
    let now = now_millis();
    match decision {
        RefreshDecision::Unchanged => {}
        RefreshDecision::Update(tokens) => {
            let sealed = seal_tokens(keyring, id, &tokens);
            sqlx::query(
                "UPDATE instances SET access_token_enc = $1, \
                 refresh_token_enc = COALESCE($2, refresh_token_enc), token_type = $3, \
                 expires_at = $4, token_version = token_version + 1, updated_at = $5 \
                 WHERE id = $6",
            )
            .bind(sealed.access_token_enc)
            .bind(sealed.refresh_token_enc)
            .bind(sealed.token_type)
            .bind(sealed.expires_at)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        }
        RefreshDecision::Invalidate(reason) => {
            sqlx::query(
                "UPDATE instances SET valid = FALSE, invalid_reason = $1, updated_at = $2 \
                 WHERE id = $3",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        }
    }
    Ok(())
}

/// SQLSTATE `lock_not_available`, raised when `lock_timeout` expires.
const LOCK_NOT_AVAILABLE: &str = "55P03";

#[async_trait]
impl Store for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn create_account(&self, new: NewAccount) -> Result<Principal> {
        let now = now_millis();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let inserted = async {
            let org_id: i64 = sqlx::query(
                "INSERT INTO organizations (name, secret_hash, created_at) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(&new.organization_name)
            .bind(&new.organization_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let user_id: i64 = sqlx::query(
                "INSERT INTO users (organization_id, email, first_name, last_name, secret_hash, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(org_id)
            .bind(&new.email)
            .bind(&new.first_name)
            .bind(&new.last_name)
            .bind(&new.user_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            Ok::<_, sqlx::Error>((org_id, user_id))
        }
        .await;
        let (org_id, user_id) = match inserted {
            Ok(ids) => ids,
            Err(e) => {
                return Err(match unique_violation(&e) {
                    Some(col) => conflict(&col),
                    None => db_err(e),
                })
            }
        };
        tx.commit().await.map_err(db_err)?;
        Ok(Principal {
            organization_id: org_id,
            organization_name: new.organization_name,
            user: User {
                id: user_id,
                email: new.email,
                first_name: new.first_name,
                last_name: new.last_name,
            },
        })
    }

    async fn organization_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM organizations")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    async fn authenticate(
        &self,
        user_secret_hash: &SecretHash,
        organization_secret_hash: &SecretHash,
    ) -> Result<Option<Principal>> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.first_name, u.last_name, o.id, o.name, o.secret_hash \
             FROM users u JOIN organizations o ON o.id = u.organization_id \
             WHERE u.secret_hash = $1",
        )
        .bind(&user_secret_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let org_hash: Vec<u8> = row.try_get(6).map_err(db_err)?;
        if !bool::from(org_hash.as_slice().ct_eq(&organization_secret_hash[..])) {
            return Ok(None);
        }
        Ok(Some(Principal {
            organization_id: row.try_get(4).map_err(db_err)?,
            organization_name: row.try_get(5).map_err(db_err)?,
            user: User {
                id: row.try_get(0).map_err(db_err)?,
                email: row.try_get(1).map_err(db_err)?,
                first_name: row.try_get(2).map_err(db_err)?,
                last_name: row.try_get(3).map_err(db_err)?,
            },
        }))
    }

    async fn create_instance(&self, new: NewInstance) -> Result<Instance> {
        let tags = tags_json(&new.tags);
        for _ in 0..ID_ATTEMPTS {
            let id = random_id();
            let now = now_millis();
            let config = seal_configuration(&self.keyring, id, &new.configuration);
            let tokens = seal_tokens(&self.keyring, id, &new.tokens);
            let inserted = sqlx::query(
                "INSERT INTO instances (id, organization_id, user_id, element_key, element_id, \
                 name, tags, configuration_enc, token_hash, access_token_enc, refresh_token_enc, \
                 token_type, expires_at, valid, disabled, created_at, updated_at, token_version) \
                 SELECT $1, u.organization_id, u.id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 TRUE, FALSE, $12, $12, 0 \
                 FROM users u WHERE u.id = $13 AND u.organization_id = $14",
            )
            .bind(id)
            .bind(&new.element_key)
            .bind(new.element_id as i64)
            .bind(&new.name)
            .bind(&tags)
            .bind(&config)
            .bind(&new.token_hash[..])
            .bind(&tokens.access_token_enc)
            .bind(&tokens.refresh_token_enc)
            .bind(&tokens.token_type)
            .bind(tokens.expires_at)
            .bind(now)
            .bind(new.user_id)
            .bind(new.organization_id)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(done) if done.rows_affected() == 1 => {
                    return self.fetch(id).await?.ok_or_else(|| {
                        StoreError::Database(format!("instance {id} vanished after insert"))
                    });
                }
                Ok(_) => {
                    return Err(StoreError::Conflict(format!(
                        "user {} is not a member of organization {}",
                        new.user_id, new.organization_id
                    )))
                }
                Err(e) => match unique_violation(&e).as_deref() {
                    Some("instances.id") => continue,
                    Some(col) => return Err(conflict(col)),
                    None => return Err(db_err(e)),
                },
            }
        }
        Err(StoreError::Database(
            "could not draw an unused instance id".into(),
        ))
    }

    async fn instance(&self, organization_id: i64, id: i64) -> Result<Option<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = $1 AND i.organization_id = $2"
        );
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn instance_any(&self, id: i64) -> Result<Option<Instance>> {
        self.fetch(id).await
    }

    async fn instance_by_token(&self, token_hash: &SecretHash) -> Result<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.token_hash = $1");
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(&token_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn instances(&self, organization_id: i64, tags: &[String]) -> Result<Vec<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.organization_id = $1 \
             ORDER BY i.seq DESC"
        );
        let raws: Vec<RawInstance> = sqlx::query_as(&sql)
            .bind(organization_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let instance = raw.open(&self.keyring)?;
            if has_tags(&instance, tags) {
                out.push(instance);
            }
        }
        Ok(out)
    }

    async fn update_instance(
        &self,
        organization_id: i64,
        id: i64,
        patch: InstancePatch,
    ) -> Result<Option<Instance>> {
        let updated = sqlx::query(
            "UPDATE instances SET name = COALESCE($1, name), tags = COALESCE($2, tags), \
             disabled = COALESCE($3, disabled), updated_at = $4 \
             WHERE id = $5 AND organization_id = $6",
        )
        .bind(patch.name)
        .bind(patch.tags.as_deref().map(tags_json))
        .bind(patch.disabled)
        .bind(now_millis())
        .bind(id)
        .bind(organization_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.instance(organization_id, id).await
    }

    async fn delete_instance(&self, organization_id: i64, id: i64) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM instances WHERE id = $1 AND organization_id = $2")
            .bind(id)
            .bind(organization_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn refresh_locked<'a>(
        &'a self,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let raw = lock_row(&mut tx, id, lease_seconds).await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let instance = raw.open(&self.keyring)?;
        let decision = job(instance).await;
        apply_decision(&mut tx, &self.keyring, id, decision).await?;
        let after = self.fetch_in(&mut tx, id).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(after)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| r.try_get::<String, _>(0).map_err(db_err))
            .transpose()
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn sealed_rows(&self) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT id, configuration_enc, access_token_enc, refresh_token_enc FROM instances ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SealedRow {
                    id: r.try_get(0).map_err(db_err)?,
                    configuration: r.try_get(1).map_err(db_err)?,
                    access_token: r.try_get(2).map_err(db_err)?,
                    refresh_token: r.try_get(3).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn replace_sealed(&self, old: &SealedRow, new: &SealedRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE instances SET configuration_enc = $1, access_token_enc = $2, refresh_token_enc = $3 \
             WHERE id = $4 AND configuration_enc = $5 AND access_token_enc IS NOT DISTINCT FROM $6 \
             AND refresh_token_enc IS NOT DISTINCT FROM $7",
        )
        .bind(&new.configuration)
        .bind(&new.access_token)
        .bind(&new.refresh_token)
        .bind(old.id)
        .bind(&old.configuration)
        .bind(&old.access_token)
        .bind(&old.refresh_token)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn callback_urls(&self, organization_id: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT url FROM organization_callbacks WHERE organization_id = $1 ORDER BY url",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(db_err))
            .collect()
    }

    async fn set_callback_urls(&self, organization_id: i64, urls: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM organization_callbacks WHERE organization_id = $1")
            .bind(organization_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for url in urls {
            sqlx::query(
                "INSERT INTO organization_callbacks (organization_id, url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(organization_id)
            .bind(url)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn expiring_before(&self, unix_seconds: i64, limit: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT id FROM instances WHERE valid AND NOT disabled \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < $1 \
             ORDER BY expires_at, id LIMIT $2",
        )
        .bind(unix_seconds)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(db_err))
            .collect()
    }

    async fn expiring_page(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, i64, i64)>> {
        let (after_expires, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows = sqlx::query(
            "SELECT id, organization_id, expires_at FROM instances WHERE valid AND NOT disabled \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < $1 \
             AND (expires_at > $2 OR (expires_at = $3 AND id > $4)) \
             ORDER BY expires_at, id LIMIT $5",
        )
        .bind(unix_seconds)
        .bind(after_expires)
        .bind(after_expires)
        .bind(after_id)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db_err)?,
                    r.try_get(1).map_err(db_err)?,
                    r.try_get(2).map_err(db_err)?,
                ))
            })
            .collect()
    }
}
