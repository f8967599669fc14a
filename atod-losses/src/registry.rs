//! The registry by name of atod-core, erring in this crate's [`Error`]: registering a name twice is
//! [`Error::DuplicateName`], and a miss is [`Error::UnknownName`] listing the known names.

use crate::error::Error;

/// Named values of one kind, in registration order: [`atod_core::Registry`] with atod-losses' errors.
pub type Registry<T> = atod_core::Registry<T, Error>;
