//! Instance configuration values and their validation.

use std::collections::BTreeMap;
use std::fmt;

use crate::spec::ConfigEntry;

/// The configuration values of an instance, by key.
///
/// `Debug` prints the keys only: values may be secrets.
///
/// ```
/// use elements_core::{keys, Configuration};
///
/// let config: Configuration = [(keys::API_KEY, "client"), (keys::API_SECRET, "s3cr3t")]
///     .into_iter()
///     .collect();
/// assert_eq!(config.get(keys::API_KEY), Some("client"));
/// assert_eq!(
///     format!("{config:?}"),
///     r#"{"oauth.api.key": "********", "oauth.api.secret": "********"}"#
/// );
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Configuration(BTreeMap<String, String>);

impl Configuration {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, if set and not blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The value of `key`, falling back to the entry's default value.
    pub fn get_or_default<'a>(&'a self, entries: &'a [ConfigEntry], key: &str) -> Option<&'a str> {
        self.get(key).or_else(|| {
            entries
                .iter()
                .find(|e| e.key == key)
                .and_then(|e| e.default_value.as_deref())
        })
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// All values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// cache (issue 19): overwrites every value with zeros, then empties the
    /// map, so a decrypted configuration kept in memory leaves nothing behind.
    pub fn zeroize(&mut self) {
        for value in self.0.values_mut() {
            zeroize::Zeroize::zeroize(value);
        }
        self.0.clear();
    }

    /// Checks that each of `keys` has a non-blank value, naming **every**
    /// missing one at once, in the order given.
    ///
    /// ```
    /// use elements_core::{keys, Configuration};
    ///
    /// let config: Configuration = [(keys::API_KEY, "client")].into_iter().collect();
    /// assert!(config.require(&[keys::API_KEY]).is_ok());
    /// assert_eq!(
    ///     config.require(&[keys::API_KEY, keys::API_SECRET, keys::CALLBACK_URL]).unwrap_err().keys,
    ///     [keys::API_SECRET, keys::CALLBACK_URL]
    /// );
    /// ```
    pub fn require(&self, keys: &[&str]) -> Result<(), MissingConfiguration> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| self.get(k).is_none())
            .map(|k| (*k).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MissingConfiguration { keys: missing })
        }
    }

    /// Checks that every required entry without a default has a non-blank
    /// value, returning **every** missing key at once, in declaration order.
    pub fn validate(&self, entries: &[ConfigEntry]) -> Result<(), MissingConfiguration> {
        let missing: Vec<String> = entries
            .iter()
            .filter(|e| e.required && e.default_value.is_none() && self.get(&e.key).is_none())
            .map(|e| e.key.clone())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MissingConfiguration { keys: missing })
        }
    }
}

impl fmt::Debug for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "********")))
            .finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Configuration {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Configuration(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Configuration {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0
            .extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

/// Required configuration that was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing required configuration: {}", keys.join(", "))]
pub struct MissingConfiguration {
    /// The missing keys, in the element's declaration order.
    pub keys: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, required: bool, default: Option<&str>) -> ConfigEntry {
        ConfigEntry {
            key: key.into(),
            name: key.into(),
            kind: "TEXTFIELD_32".into(),
            required,
            default_value: default.map(Into::into),
            description: String::new(),
            hide_from_console: false,
            secret: false,
            allowed_values: Vec::new(),
            custom_host: false,
        }
    }

    #[test]
    fn lists_every_missing_key() {
        let entries = [
            entry("a", true, None),
            entry("b", true, Some("x")),
            entry("c", false, None),
            entry("d", true, None),
        ];
        let given: Configuration = [("d", " ")].into_iter().collect();
        assert_eq!(given.validate(&entries).unwrap_err().keys, ["a", "d"]);
        let given: Configuration = [("a", "1"), ("d", "2")].into_iter().collect();
        assert_eq!(given.validate(&entries), Ok(()));
        assert_eq!(given.get_or_default(&entries, "b"), Some("x"));
    }

    #[test]
    fn debug_hides_values() {
        let given: Configuration = [("oauth.api.secret", "s3cr3t")].into_iter().collect();
        assert_eq!(format!("{given:?}"), r#"{"oauth.api.secret": "********"}"#);
    }
}
