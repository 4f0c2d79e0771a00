//! What both engines share besides the queries ([`crate::sql`]): the row
//! shapes, sealing and opening the encrypted columns, id generation, and
//! error mapping.

use std::collections::BTreeMap;

use elements_core::{Configuration, Secret};

use crate::{Instance, Keyring, Result, StoreError, Tokens, User};

/// The columns of an instance row joined with its user, in [`RawInstance`]
/// order. The instance table is `i`, the user table `u`.
pub(crate) const INSTANCE_COLUMNS: &str = "i.id, i.organization_id, i.user_id, u.email, \
     u.first_name, u.last_name, i.element_key, i.element_id, i.name, i.tags, \
     i.configuration_enc, i.access_token_enc, i.refresh_token_enc, i.token_type, \
     i.expires_at, i.valid, i.invalid_reason, i.disabled, i.created_at, i.updated_at, \
     i.token_version, i.health_failures, i.health_last_error, i.health_since";

/// `FROM` clause matching [`INSTANCE_COLUMNS`].
pub(crate) const INSTANCE_FROM: &str = "FROM instances i JOIN users u ON u.id = i.user_id";

/// Logical column names used in the associated data.
pub(crate) const COL_CONFIGURATION: &str = "configuration";
pub(crate) const COL_ACCESS_TOKEN: &str = "access_token";
pub(crate) const COL_REFRESH_TOKEN: &str = "refresh_token";

/// How many times a random instance id is redrawn after a collision.
pub(crate) const ID_ATTEMPTS: usize = 8;

/// An instance row as stored (still encrypted).
#[derive(sqlx::FromRow)]
pub(crate) struct RawInstance {
    pub id: i64,
    pub organization_id: i64,
    pub user_id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub element_key: String,
    pub element_id: i64,
    pub name: String,
    pub tags: String,
    pub configuration_enc: String,
    pub access_token_enc: Option<String>,
    pub refresh_token_enc: Option<String>,
    pub token_type: Option<String>,
    pub expires_at: Option<i64>,
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub token_version: i64,
    pub health_failures: i64,
    pub health_last_error: Option<String>,
    pub health_since: Option<i64>,
}

/// The associated data binding a value to its row and column.
pub(crate) fn aad(id: i64, column: &str) -> String {
    format!("instance:{id}:{column}")
}

/// Encrypts the configuration (a JSON object of key -> value).
pub(crate) fn seal_configuration(keyring: &Keyring, id: i64, config: &Configuration) -> String {
    let map: BTreeMap<&str, &str> = config.iter().collect();
    let json = serde_json::to_vec(&map).expect("a string map serializes");
    keyring.encrypt(&aad(id, COL_CONFIGURATION), &json)
}

/// Encrypts a token, if there is one.
pub(crate) fn seal_token(
    keyring: &Keyring,
    id: i64,
    column: &str,
    token: Option<&Secret>,
) -> Option<String> {
    token.map(|t| keyring.encrypt(&aad(id, column), t.expose().as_bytes()))
}

/// The encrypted token columns of an update.
pub(crate) struct SealedTokens {
    pub access_token_enc: Option<String>,
    /// `None`: keep the stored refresh token (when updating) or store none.
    pub refresh_token_enc: Option<String>,
    pub token_type: Option<String>,
    pub expires_at: Option<i64>,
}

pub(crate) fn seal_tokens(keyring: &Keyring, id: i64, tokens: &Tokens) -> SealedTokens {
    SealedTokens {
        access_token_enc: seal_token(keyring, id, COL_ACCESS_TOKEN, tokens.access_token.as_ref()),
        refresh_token_enc: seal_token(
            keyring,
            id,
            COL_REFRESH_TOKEN,
            tokens.refresh_token.as_ref(),
        ),
        token_type: tokens.token_type.clone(),
        expires_at: tokens.expires_at,
    }
}

fn open_token(
    keyring: &Keyring,
    id: i64,
    column: &str,
    stored: Option<&str>,
) -> Result<Option<Secret>> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let aad = aad(id, column);
    let bytes = keyring.decrypt(&aad, stored)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::Decrypt {
        what: aad,
        reason: "the decrypted value is not UTF-8".into(),
    })?;
    Ok(Some(Secret::new(text)))
}

/// Serializes tags for the `tags` column.
pub(crate) fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("a string list serializes")
}

/// Whether `tags` hold every one of `wanted`.
pub(crate) fn has_tags(tags: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|t| tags.contains(t))
}

/// How many instances organization `$1` holds, counted only up to `$2` (the
/// cap) and only when its highest `seq` reaches the cap: `seq` values are
/// distinct and positive within an organization, so it holds at most
/// `MAX(seq)` instances (one index lookup), and while that bound is below
/// the cap the answer is 0 (below the cap is all a caller asks).
pub(crate) const HELD_UP_TO_CAP: &str = "SELECT CASE \
     WHEN COALESCE((SELECT MAX(seq) FROM instances WHERE organization_id = $1), 0) < $2 \
     THEN 0 \
     ELSE (SELECT COUNT(*) FROM \
     (SELECT 1 FROM instances WHERE organization_id = $1 LIMIT $2) AS capped) \
     END";

/// A new instance row, ready to insert: id drawn, secrets sealed.
pub(crate) struct InstanceRow {
    pub id: i64,
    pub organization_id: i64,
    pub user_id: i64,
    pub element_key: String,
    pub element_id: i64,
    pub name: String,
    /// JSON array.
    pub tags: String,
    pub configuration_enc: String,
    pub token_hash: Vec<u8>,
    pub tokens: SealedTokens,
    /// Unix milliseconds.
    pub now: i64,
    /// Refuse the row ([`Inserted::AtCap`]) if its organization already
    /// holds this many instances when it is written; `None`: no check.
    pub cap: Option<i64>,
}

/// Binds an [`InstanceRow`]'s 14 parameters onto `$query`, in the order
/// every instance `INSERT` numbers them: id, organization, user, element
/// key, element id, name, tags, configuration, token hash, access token,
/// refresh token, token type, expiry, time. (A macro: the query's type is
/// the engine's.)
macro_rules! bind_instance_row {
    ($query:expr, $row:expr) => {
        $query
            .bind($row.id)
            .bind($row.organization_id)
            .bind($row.user_id)
            .bind(&$row.element_key)
            .bind($row.element_id)
            .bind(&$row.name)
            .bind(&$row.tags)
            .bind(&$row.configuration_enc)
            .bind(&$row.token_hash)
            .bind(&$row.tokens.access_token_enc)
            .bind(&$row.tokens.refresh_token_enc)
            .bind(&$row.tokens.token_type)
            .bind($row.tokens.expires_at)
            .bind($row.now)
    };
}
pub(crate) use bind_instance_row;

/// What became of an insert that did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The row is committed.
    Done,
    /// The random id is already taken: draw another, seal again, resend.
    IdTaken,
    /// Not written: the organization holds its cap of instances
    /// ([`InstanceRow::cap`]).
    AtCap,
}

/// The outcome of a single-row instance insert, on either engine: a taken id
/// is drawn again, another unique column is a conflict, no row inserted means
/// the user is not a member of the organization. `Err` for an error that is
/// not about this row (`None` from `unique_violation`).
pub(crate) fn insert_outcome(
    row: &InstanceRow,
    inserted: std::result::Result<u64, sqlx::Error>,
) -> std::result::Result<Result<Inserted>, sqlx::Error> {
    match inserted {
        Ok(1) => Ok(Ok(Inserted::Done)),
        Ok(_) => Ok(Err(StoreError::Conflict(format!(
            "user {} is not a member of organization {}",
            row.user_id, row.organization_id
        )))),
        Err(e) => match unique_violation(&e).as_deref() {
            Some("instances.id") => Ok(Ok(Inserted::IdTaken)),
            Some(col) => Ok(Err(conflict(col))),
            None => Err(e),
        },
    }
}

impl RawInstance {
    /// The row's tags (stored in the clear).
    pub(crate) fn tags(&self) -> Result<Vec<String>> {
        serde_json::from_str(&self.tags)
            .map_err(|e| StoreError::Database(format!("instance {}: malformed tags: {e}", self.id)))
    }

    /// Decrypts the row.
    pub(crate) fn open(self, keyring: &Keyring) -> Result<Instance> {
        let tags = self.tags()?;
        self.open_tagged(keyring, tags)
    }

    /// Decrypts the row whose tags were already read with [`Self::tags`].
    pub(crate) fn open_tagged(self, keyring: &Keyring, tags: Vec<String>) -> Result<Instance> {
        let id = self.id;
        let config_aad = aad(id, COL_CONFIGURATION);
        let config_json = keyring.decrypt(&config_aad, &self.configuration_enc)?;
        let map: BTreeMap<String, String> =
            serde_json::from_slice(&config_json).map_err(|_| StoreError::Decrypt {
                what: config_aad,
                reason: "the decrypted value is not a JSON object of strings".into(),
            })?;
        let health = crate::events::Health::derive(
            self.valid,
            self.disabled,
            self.health_failures,
            self.health_last_error.clone(),
            self.health_since.unwrap_or(self.created_at),
            self.invalid_reason.as_deref(),
        );
        Ok(Instance {
            id,
            organization_id: self.organization_id,
            user: User {
                id: self.user_id,
                email: self.email,
                first_name: self.first_name,
                last_name: self.last_name,
            },
            element_key: self.element_key,
            element_id: self.element_id as u64,
            name: self.name,
            tags,
            configuration: map.into_iter().collect(),
            tokens: Tokens {
                access_token: open_token(
                    keyring,
                    id,
                    COL_ACCESS_TOKEN,
                    self.access_token_enc.as_deref(),
                )?,
                refresh_token: open_token(
                    keyring,
                    id,
                    COL_REFRESH_TOKEN,
                    self.refresh_token_enc.as_deref(),
                )?,
                token_type: self.token_type,
                expires_at: self.expires_at,
            },
            valid: self.valid,
            invalid_reason: self.invalid_reason,
            disabled: self.disabled,
            created_at: self.created_at,
            updated_at: self.updated_at,
            token_version: self.token_version,
            health,
        })
    }
}

/// A new random instance id: positive and below 2^53 (exact in JSON).
pub(crate) fn random_id() -> i64 {
    rand::random_range(1..(1i64 << 53))
}

/// The bits of an instance id below its time part.
const INSTANCE_ID_RANDOM_BITS: u32 = 12;
/// The time part's origin: 2024-01-01T00:00:00Z in Unix milliseconds.
const INSTANCE_ID_EPOCH_MS: i64 = 1_704_067_200_000;

/// A new instance id for a row written at `now_ms` (Unix milliseconds):
/// the milliseconds since 2024 above 12 random bits, positive and below
/// 2^53 (exact in JSON). Consecutive ids land next to each other in the
/// table's b-tree, so a batch of inserts writes a few pages instead of one
/// per row (ARCHITECTURE.md, "Decisions"). Outside 2024-2093 (a clock far
/// off) the id is wholly random, as all were before.
pub(crate) fn instance_id(now_ms: i64) -> i64 {
    let ms = now_ms - INSTANCE_ID_EPOCH_MS;
    if !(0..1i64 << (53 - INSTANCE_ID_RANDOM_BITS)).contains(&ms) {
        return random_id();
    }
    let low = rand::random_range(0..(1i64 << INSTANCE_ID_RANDOM_BITS));
    ((ms << INSTANCE_ID_RANDOM_BITS) | low).max(1)
}

/// A random, non-zero lease owner tag.
pub(crate) fn random_owner() -> i64 {
    rand::random_range(1..i64::MAX)
}

/// Maps a database error, keeping the engine's message and code (which name
/// constraints and columns, never bound values).
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => StoreError::Database(format!("{} (code {code})", d.message())),
            None => StoreError::Database(d.message().to_owned()),
        },
        sqlx::Error::Configuration(_) => {
            StoreError::InvalidUrl("the database URL or its options are invalid".into())
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// Maps a migration error.
pub(crate) fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => match db_err(inner) {
            StoreError::Database(m) => StoreError::Database(format!("migration failed: {m}")),
            other => other,
        },
        other => StoreError::Database(format!("migration failed: {other}")),
    }
}

/// If `e` is a unique-constraint violation, the violated `table.column`
/// (`instances.id`, `instances.token_hash`, `organizations.secret_hash`,
/// `users.secret_hash`), as far as it can be told.
pub(crate) fn unique_violation(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    if d.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    // PostgreSQL names the constraint; the migrations name them
    // `<table>_<column>_key` and `<table>_pkey`.
    if let Some(c) = d.constraint() {
        return Some(match c {
            "instances_pkey" => "instances.id".to_owned(),
            "instances_token_hash_key" => "instances.token_hash".to_owned(),
            "organizations_secret_hash_key" => "organizations.secret_hash".to_owned(),
            "users_secret_hash_key" => "users.secret_hash".to_owned(),
            other => other.to_owned(),
        });
    }
    // SQLite: "UNIQUE constraint failed: instances.token_hash".
    let msg = d.message();
    Some(
        msg.rsplit_once(": ")
            .map(|(_, cols)| cols.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned()),
    )
}

/// The conflict error for a violated unique column.
pub(crate) fn conflict(column: &str) -> StoreError {
    StoreError::Conflict(match column {
        "organizations.secret_hash" => "the organization secret is already in use".to_owned(),
        "users.secret_hash" => "the user secret is already in use".to_owned(),
        "instances.token_hash" => "the instance token is already in use".to_owned(),
        other => format!("unique constraint on {other} violated"),
    })
}

/// How long a refresher waits for another one's lock or lease before giving
/// up: twice the lease plus a second (a crashed holder's lease has expired by
/// then).
pub(crate) fn lock_wait_millis(lease_seconds: i64) -> i64 {
    lease_millis(lease_seconds)
        .saturating_mul(2)
        .saturating_add(1000)
}

/// The lease length in milliseconds (at least one second).
pub(crate) fn lease_millis(lease_seconds: i64) -> i64 {
    lease_seconds
        .clamp(1, i64::MAX / 4_000)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_follow_time_below_two_to_the_53() {
        let now = 1_795_000_000_000; // 2026-11-18
        let ids: Vec<i64> = (0..64).map(|i| instance_id(now + i * 7)).collect();
        for pair in ids.windows(2) {
            assert!(
                pair[0] < pair[1],
                "later milliseconds, larger ids: {pair:?}"
            );
        }
        for id in &ids {
            assert!(*id > 0 && *id < 1 << 53, "{id}");
        }
        assert_eq!(
            ids[0] >> INSTANCE_ID_RANDOM_BITS,
            now - INSTANCE_ID_EPOCH_MS
        );
        // The low bits are drawn: 64 draws in one millisecond are not all equal.
        let same: std::collections::HashSet<i64> = (0..64).map(|_| instance_id(now)).collect();
        assert!(same.len() > 1);
        // A clock outside the range still gives a valid id.
        for far in [0, i64::MAX / 2] {
            let id = instance_id(far);
            assert!(id > 0 && id < 1 << 53, "{id}");
        }
    }
}
