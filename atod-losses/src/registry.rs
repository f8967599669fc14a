//! A registry by name: registering a name twice is an error, and a miss lists the known names.

use crate::error::{Error, Result};

/// Named values of one kind, in registration order.
#[derive(Debug, Clone)]
pub struct Registry<T> {
    kind: &'static str,
    entries: Vec<(&'static str, T)>,
}

impl<T> Registry<T> {
    /// An empty registry of `kind` (`loss preset`, `loss component`, ...), the word its errors use.
    pub fn new(kind: &'static str) -> Self {
        Registry { kind, entries: Vec::new() }
    }

    /// Adds `name`.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateName`] when `name` is already registered.
    pub fn register(&mut self, name: &'static str, value: T) -> Result<()> {
        if self.entries.iter().any(|(n, _)| *n == name) {
            return Err(Error::DuplicateName { kind: self.kind, name: name.to_owned() });
        }
        self.entries.push((name, value));
        Ok(())
    }

    /// Builds a registry from a list, failing on a duplicate.
    pub fn from_entries(kind: &'static str, entries: impl IntoIterator<Item = (&'static str, T)>) -> Result<Self> {
        let mut registry = Registry::new(kind);
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
    pub fn get(&self, name: &str) -> Result<&T> {
        self.entries.iter().find(|(n, _)| *n == name).map(|(_, v)| v).ok_or_else(|| Error::UnknownName {
            kind: self.kind,
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(n, _)| *n).collect()
    }
}
