//! The one error type of atod-losses, grouped by cause.

/// Everything that can go wrong when building a loss from its config or applying it to a batch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Configuration: names and TOML.
    /// A preset, component, weighting or aggregation name that is not registered.
    #[error("unknown {kind} `{name}`; known {kind}s: {known}")]
    UnknownName {
        /// What kind of name it was (`loss preset`, `loss component`, ...).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// A name registered twice.
    #[error("{kind} `{name}` is registered twice")]
    DuplicateName {
        /// What kind of name it was.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The `[loss]` table does not deserialise (unknown key, wrong type, bad schedule expression).
    #[error("invalid [loss] config: {message}")]
    Config {
        /// The deserialiser's message, which names the offending key and the expected ones.
        message: String,
    },
    /// A config value outside its range.
    #[error("invalid [loss] value `{key}` = {got}: expected {expected}")]
    Value {
        /// The key.
        key: &'static str,
        /// What was given.
        got: String,
        /// What would be right.
        expected: &'static str,
    },
    /// Any other error of atod-core (its registry's errors become [`Error::UnknownName`] and
    /// [`Error::DuplicateName`]).
    #[error(transparent)]
    Core(atod_core::Error),

    // The batch.
    /// A tensor or vector of the wrong shape or length.
    #[error("batch field `{field}`: expected shape {expected}, got {got}")]
    Shape {
        /// The field of the batch.
        field: &'static str,
        /// The expected shape.
        expected: String,
        /// The shape found.
        got: String,
    },
    /// Row bookkeeping that does not add up (a trajectory id out of range, a trajectory in two groups, ...).
    #[error("batch rows: {problem}")]
    Rows {
        /// What is inconsistent, naming the row or trajectory.
        problem: String,
    },
    /// A component is configured with a coefficient that is not constantly 0, but the caller does not feed the
    /// input it needs ([`crate::Loss::check_fed`], before any batch is built).
    #[error(
        "`loss.components.{component}` needs the batch input `{input}`, which this caller does not feed (it feeds: \
         {fed}); remove the key or set it to 0"
    )]
    Unfed {
        /// The component's name.
        component: String,
        /// The missing input ([`crate::Input::name`]).
        input: &'static str,
        /// What the caller feeds, comma-separated, or `nothing`.
        fed: String,
    },
    /// A component is switched on but its input is not in the batch.
    #[error("loss component `{component}` has a non-zero coefficient but the batch has no `{input}`")]
    MissingInput {
        /// The component.
        component: &'static str,
        /// The missing field of `TrainBatch`.
        input: &'static str,
    },

    // Numerics.
    /// A loss or gradient norm that is NaN or infinite; the trainer should skip the update.
    #[error("non-finite {what}: {value}")]
    NonFinite {
        /// What was checked (`loss/total`, `grad_norm`, ...).
        what: String,
        /// The value found.
        value: f64,
    },
}

impl From<atod_core::Error> for Error {
    /// A registry's errors become this crate's own variants, with the same text.
    fn from(e: atod_core::Error) -> Self {
        match e {
            atod_core::Error::UnknownName { kind, name, known } => {
                Error::UnknownName { kind, name, known: known.join(", ") }
            }
            atod_core::Error::DuplicateName { kind, name } => Error::DuplicateName { kind, name },
            other => Error::Core(other),
        }
    }
}

/// `Result` with atod-losses' [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
