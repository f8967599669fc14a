//! A registry by name: registering a name twice is an error, and a miss lists the known names.
//!
//! Every extension point chosen by name in a config (loss presets and components, model presets, ...) is one
//! registry, so the name list, the lookup and the error message follow from one declaration.
//!
//! The error type is a parameter (atod-core's [`Error`] by default) so that a crate with its own error enum
//! gets its own variants straight from the registry's methods, through `From<atod_core::Error>`.

use std::fmt;
use std::marker::PhantomData;

use crate::error::Error;

/// Named values of one kind, in registration order; errors are `E` (converted from atod-core's [`Error`]).
pub struct Registry<T, E = Error> {
    kind: &'static str,
    entries: Vec<(&'static str, T)>,
    error: PhantomData<fn() -> E>,
}

impl<T, E: From<Error>> Registry<T, E> {
    /// An empty registry of `kind` (`loss preset`, `model preset`, ...), the word its errors use.
    pub fn new(kind: &'static str) -> Self {
        Registry { kind, entries: Vec::new(), error: PhantomData }
    }

    /// Adds `name`.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when `name` is already registered.
    pub fn register(&mut self, name: &'static str, value: T) -> Result<(), E> {
        if self.entries.iter().any(|(n, _)| *n == name) {
            return Err(Error::DuplicateName { kind: self.kind, name: name.to_owned() }.into());
        }
        self.entries.push((name, value));
        Ok(())
    }

    /// Builds a registry from a list, failing on a duplicate.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] for the first name listed twice.
    pub fn from_entries(kind: &'static str, entries: impl IntoIterator<Item = (&'static str, T)>) -> Result<Self, E> {
        let mut registry = Self::new(kind);
        for (name, value) in entries {
            registry.register(name, value)?;
        }
        Ok(registry)
    }

    /// The value registered as `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownName`] listing every registered name.
    pub fn get(&self, name: &str) -> Result<&T, E> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::UnknownName { kind: self.kind, name: name.to_owned(), known: self.names() }.into())
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(n, _)| *n).collect()
    }
}

// By hand rather than derived, so that neither needs the error type to be `Debug` or `Clone`.
impl<T: fmt::Debug, E> fmt::Debug for Registry<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("kind", &self.kind).field("entries", &self.entries).finish()
    }
}

impl<T: Clone, E> Clone for Registry<T, E> {
    fn clone(&self) -> Self {
        Registry { kind: self.kind, entries: self.entries.clone(), error: PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_refuses_duplicates_and_lists_names_on_a_miss() {
        let mut r: Registry<u32> = Registry::from_entries("widget", [("a", 1), ("b", 2)]).unwrap();
        assert_eq!(r.register("a", 3), Err(Error::DuplicateName { kind: "widget", name: "a".into() }));
        assert_eq!(r.get("b"), Ok(&2));
        let miss = r.get("c").unwrap_err();
        assert_eq!(miss, Error::UnknownName { kind: "widget", name: "c".into(), known: vec!["a", "b"] });
        assert_eq!(miss.to_string(), "unknown widget `c`; known widgets: a, b");
        assert_eq!(r.names(), ["a", "b"]);
    }
}
