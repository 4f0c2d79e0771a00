//! A cached instance's credential as applied (issue 19): the headers and
//! query parameters that `GET /instances/{id}/credentials` answers, worked
//! out from the element's `[credential]` template once per cached entry
//! instead of on every read (applying it was ~2.6% of a credentials read's
//! samples).
//!
//! The result depends on the instance (its configuration and access token,
//! which never change within an entry: a write or refresh makes a new one)
//! and on the element definition. The entry keeps the `Arc` of the
//! definition it was applied with and answers from the cache only for that
//! same definition (compared by address, which cannot be reused while the
//! entry holds it): an organization that redefines its private element
//! gets a fresh application from its next read. The applied values are
//! [`elements_core::Secret`]s: zeroized when the entry is dropped.

use std::borrow::Cow;
use std::sync::Arc;

use elements_core::{AppliedCredential, Element};

use super::SharedInstance;

/// The credential of one entry as applied for `element`.
pub(super) struct Applied {
    element: Arc<dyn Element>,
    credential: AppliedCredential,
}

impl SharedInstance {
    /// This instance's credential as applied for `element`: kept from an
    /// earlier read of this entry with the same definition, else made by
    /// `apply` (and kept, if this entry has kept nothing yet).
    pub fn applied<E>(
        &self,
        element: &Arc<dyn Element>,
        apply: impl FnOnce() -> Result<AppliedCredential, E>,
    ) -> Result<Cow<'_, AppliedCredential>, E> {
        let same =
            |kept: &Applied| std::ptr::addr_eq(Arc::as_ptr(&kept.element), Arc::as_ptr(element));
        match self.0.applied.get() {
            Some(kept) if same(kept) => return Ok(Cow::Borrowed(&kept.credential)),
            Some(_) => return apply().map(Cow::Owned),
            None => {}
        }
        let credential = apply()?;
        let kept = Applied {
            element: element.clone(),
            credential,
        };
        match self.0.applied.set(kept) {
            Ok(()) => match self.0.applied.get() {
                Some(kept) => Ok(Cow::Borrowed(&kept.credential)),
                None => unreachable!("a OnceLock just set holds its value"),
            },
            // Another read of this entry kept its own first.
            Err(Applied { credential, .. }) => Ok(Cow::Owned(credential)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elements_core::Secret;

    fn instance() -> SharedInstance {
        super::super::tests::instance(7, "at-1").into()
    }

    fn bearer(token: &str) -> AppliedCredential {
        AppliedCredential {
            headers: vec![(
                "Authorization".into(),
                Secret::new(format!("Bearer {token}")),
            )],
            query: vec![],
        }
    }

    #[test]
    fn the_same_definition_is_answered_from_the_entry() {
        let registry = elements_catalog::builtin().unwrap();
        let hubspot = registry.by_key("hubspot").unwrap().clone();
        let shared = instance();
        let mut calls = 0;
        let mut read = |element: &Arc<dyn Element>, token: &str| {
            shared
                .applied(element, || {
                    calls += 1;
                    Ok::<_, ()>(bearer(token))
                })
                .unwrap()
                .into_owned()
        };
        assert_eq!(read(&hubspot, "one"), bearer("one"));
        // Kept: the second application is not made.
        assert_eq!(read(&hubspot, "two"), bearer("one"));
        // Another definition (a redefined private element) is applied anew,
        // every time, and the kept one stays for the first.
        let other = elements_catalog::builtin()
            .unwrap()
            .by_key("hubspot")
            .unwrap()
            .clone();
        assert_eq!(read(&other, "three"), bearer("three"));
        assert_eq!(read(&other, "four"), bearer("four"));
        assert_eq!(read(&hubspot, "five"), bearer("one"));
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_failed_application_is_not_kept() {
        let registry = elements_catalog::builtin().unwrap();
        let hubspot = registry.by_key("hubspot").unwrap().clone();
        let shared = instance();
        assert_eq!(
            shared.applied(&hubspot, || Err("missing")).unwrap_err(),
            "missing"
        );
        let applied = shared
            .applied(&hubspot, || Ok::<_, ()>(bearer("ok")))
            .unwrap();
        assert_eq!(*applied, bearer("ok"));
    }
}
