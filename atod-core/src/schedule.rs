//! The schedule DSL: any scalar hyperparameter may be a number or an expression of the training
//! step.
//!
//! A config writes `temperature = 0.7` or `temperature = "linear(1.0, 0.7, 100)"`; both become a
//! [`Schedule`], parsed once when the config loads and evaluated once per training step with
//! [`Schedule::eval`].
//!
//! # Grammar
//!
//! ```text
//! expr    := term (("+" | "-") term)*
//! term    := unary (("*" | "/") unary)*
//! unary   := "-" unary | primary
//! primary := NUMBER | "step" | "total" | IDENT "(" [expr ("," expr)*] ")" | "(" expr ")"
//! ```
//!
//! `NUMBER` is a decimal with an optional fraction and exponent (`1`, `0.5`, `.5`, `1e-3`,
//! `2.5E+2`); there are no negative literals, `-1` is the negation of `1`. Binary operators are
//! left-associative, so `8 / 4 / 2` is `1`. Whitespace, newlines included, may separate tokens,
//! so a source may span several lines. `step` is the current training step and `total` the
//! number of steps of the whole run.
//!
//! # Functions
//!
//! Every argument is itself an expression, so `linear(1, 0.1, total / 2)` works. Below,
//! `p = min(step / steps, 1)` is the progress through a ramp; `steps <= 0` means the ramp is
//! already over (`p = 1`).
//!
//! | call | value |
//! |---|---|
//! | `const(x)` | `x` |
//! | `linear(from, to, steps)` | `from + (to - from) * p` |
//! | `cosine(from, to, steps)` | `to + (from - to) * 0.5 * (1 + cos(pi * p))` |
//! | `exp(from, to, steps)` | `from * (to / from)^p`; linear unless both share a strict sign |
//! | `warmup(steps, x)` | `x * p`, a linear ramp from 0 into `x` |
//! | `step_at(k, before, after)` | `before` while `step < k`, `after` from step `k` on |
//! | `min(a, b)`, `max(a, b)` | the smaller, the larger |
//! | `clamp(x, lo, hi)` | `x` limited to `[lo, hi]`; `hi` when `lo > hi` |
//!
//! The three ramps return exactly `to` once `p` reaches 1 and never leave `[min(from, to),
//! max(from, to)]`, not even by a rounding error. `warmup` is exactly 0 at `p = 0`. Every
//! function sees the same `step`: in `warmup(100, cosine(1, 0, total))` the cosine runs from step
//! 0, and the warm-up scales its first 100 steps.
//!
//! # Evaluation never panics
//!
//! Arithmetic follows IEEE 754: `1 / 0` is infinity and `0 / 0` is NaN, and such values propagate
//! rather than stop training; validating the range of a hyperparameter is its consumer's job.
//! `min` and `max` follow [`f64::min`] and [`f64::max`], which ignore a NaN argument, and `clamp`
//! never panics, unlike [`f64::clamp`].
//!
//! # Errors
//!
//! A [`ScheduleError`] names the 1-based line and column (counted in characters) of the problem,
//! what was expected and what was found; an unknown function lists the known ones, and
//! [`ScheduleError::render`] draws the offending line with a caret under the column. Expressions
//! nest at most 64 levels deep, which no real schedule approaches; the limit keeps parsing and
//! evaluation from overflowing the stack on hostile input.
//!
//! # Examples
//!
//! ```
//! use atod_core::schedule::Schedule;
//!
//! // The inner expression sees the same step as the warm-up: the cosine runs from step 0, and the
//! // warm-up scales it down over the first 100 steps.
//! let lr = Schedule::parse("warmup(100, cosine(3e-4, 3e-5, total))").unwrap();
//! assert_eq!(lr.eval(0, 1000), 0.0);
//! assert_eq!(lr.eval(1000, 1000), 3e-5);
//! ```

use std::fmt;
use std::str::FromStr;

/// How deeply an expression may nest, counting both the tree of operators and calls and the
/// parentheses around it. Parsing, printing and evaluation recurse along the tree, so without a
/// bound a source like `((((...` could overflow the stack instead of returning an error.
const MAX_DEPTH: usize = 64;

/// What may start an operand; shared by the syntax error and the unknown-identifier message.
const OPERAND_EXPECTED: &str = "a number, `step`, `total`, a function call or `(`";

/// A hyperparameter value that may vary with the training step: a parsed [`Expr`] plus the text it
/// came from.
///
/// Equality compares the expression, the source text and whether the schedule was given as a
/// number, which is exactly what serialisation preserves.
///
/// # Examples
///
/// ```
/// use atod_core::schedule::Schedule;
///
/// let temperature: Schedule = "linear(1.0, 0.1, 80)".parse().unwrap();
/// assert_eq!(temperature.eval(0, 100), 1.0);
/// assert!((temperature.eval(40, 100) - 0.55).abs() < 1e-12);
/// assert_eq!(temperature.eval(500, 100), 0.1);
/// assert!(!temperature.is_constant());
/// assert_eq!(Schedule::constant(0.5).eval(7, 100), 0.5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    expr: Expr,
    source: String,
    /// Whether the schedule was given as a plain number rather than as text, so that it
    /// serialises back as a number.
    given_as_number: bool,
}

impl Schedule {
    /// Parses a schedule expression; see the [module documentation](self) for the grammar.
    ///
    /// # Errors
    ///
    /// A [`ScheduleError`] with the line and column of the first problem in `src`.
    ///
    /// # Examples
    ///
    /// ```
    /// use atod_core::schedule::{Schedule, ScheduleError};
    ///
    /// let err = Schedule::parse("linear(1.0, 0.1, 80").unwrap_err();
    /// assert_eq!(err.to_string(), "line 1, column 20: expected `)` or `,`, found end of input");
    /// assert!(matches!(err, ScheduleError::Syntax { line: 1, column: 20, .. }));
    /// ```
    pub fn parse(src: &str) -> Result<Schedule, ScheduleError> {
        let expr = Parser::new(src).parse_all()?;
        Ok(Schedule { expr, source: src.to_owned(), given_as_number: false })
    }

    /// A schedule that is `value` at every step; it serialises as that number.
    ///
    /// Its [`source`](Self::source) is the number in the canonical form [`Display`](fmt::Display)
    /// prints, which parses back to the same value (a non-finite value prints as a division such
    /// as `(1 / 0)`).
    pub fn constant(value: f64) -> Schedule {
        let expr = Expr::Number(value);
        Schedule { source: expr.to_string(), expr, given_as_number: true }
    }

    /// The value at training step `step` of a run of `total` steps.
    ///
    /// Never panics: a division by zero gives infinity or NaN, as IEEE 754 arithmetic does.
    pub fn eval(&self, step: u64, total: u64) -> f64 {
        self.expr.eval(step, total)
    }

    /// The text this schedule was parsed from, exactly as given; for a constant, the number
    /// printed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether the value is the same at every step of every run: the expression mentions neither
    /// `step` nor `total`, not even implicitly through a function of the step such as `linear`.
    pub fn is_constant(&self) -> bool {
        self.expr.is_constant()
    }

    /// The first of the steps `0..steps` of a run of `steps` steps where `bad` holds for the value, with that
    /// value: the range check of a config (a weight outside [0, 1], a learning rate below 0).
    pub fn first_step_where(&self, steps: u64, bad: impl Fn(f64) -> bool) -> Option<(u64, f64)> {
        (0..steps).map(|s| (s, self.eval(s, steps))).find(|&(_, value)| bad(value))
    }
}

impl From<f64> for Schedule {
    /// The same as [`Schedule::constant`].
    fn from(value: f64) -> Schedule {
        Schedule::constant(value)
    }
}

impl fmt::Display for Schedule {
    /// The expression in canonical form: single spaces around binary operators, parentheses only
    /// where precedence needs them, numbers in their shortest exact form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// The same as [`Schedule::parse`].
    fn from_str(src: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(src)
    }
}

impl serde::Serialize for Schedule {
    /// A schedule given as a number serialises as that number, any other as its source text, so
    /// that a config written back reads as the user wrote it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.expr, self.given_as_number) {
            (Expr::Number(value), true) => serializer.serialize_f64(*value),
            _ => serializer.serialize_str(&self.source),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    /// Accepts a number (integer or float) or a string expression; a string that does not parse
    /// is an error carrying the full [`ScheduleError`] message, line and column included.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Schedule, D::Error> {
        deserializer.deserialize_any(ScheduleVisitor)
    }
}

/// Builds a [`Schedule`] from whichever of a number or a string the input holds.
struct ScheduleVisitor;

impl serde::de::Visitor<'_> for ScheduleVisitor {
    type Value = Schedule;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a schedule expression such as \"linear(1.0, 0.1, 80)\"")
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Schedule, E> {
        Ok(Schedule::constant(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Schedule, E> {
        Ok(Schedule::constant(value as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Schedule, E> {
        Ok(Schedule::constant(value as f64))
    }

    fn visit_str<E: serde::de::Error>(self, src: &str) -> Result<Schedule, E> {
        Schedule::parse(src).map_err(E::custom)
    }
}

/// A parsed schedule expression.
///
/// The parser produces only finite, non-negative [`Number`](Expr::Number)s (`-1` parses as
/// `Neg(Number(1))`), and [`Display`](fmt::Display) prints any such tree so that it parses back to
/// the same tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A literal number.
    Number(f64),
    /// The current training step.
    Step,
    /// The total number of training steps of the run.
    Total,
    /// The negation of the inner expression.
    Neg(Box<Expr>),
    /// An arithmetic operation.
    Binary {
        /// Which operation.
        op: BinOp,
        /// The left operand.
        lhs: Box<Expr>,
        /// The right operand.
        rhs: Box<Expr>,
    },
    /// A call of a built-in function.
    Call {
        /// Which function.
        func: Func,
        /// The arguments, as many as [`Func::arity`] says for any parsed expression.
        args: Vec<Expr>,
    },
}

impl Expr {
    /// The value at training step `step` of a run of `total` steps.
    ///
    /// Never panics: division by zero follows IEEE 754, and in a hand-built call with too few
    /// arguments the missing ones are NaN (extra ones are ignored).
    pub fn eval(&self, step: u64, total: u64) -> f64 {
        self.eval_at(step as f64, total as f64)
    }

    /// Whether the value is the same at every step of every run; see [`Schedule::is_constant`].
    pub fn is_constant(&self) -> bool {
        match self {
            Expr::Number(_) => true,
            Expr::Step | Expr::Total => false,
            Expr::Neg(inner) => inner.is_constant(),
            Expr::Binary { lhs, rhs, .. } => lhs.is_constant() && rhs.is_constant(),
            Expr::Call { func, args } => !func.reads_step() && args.iter().all(Expr::is_constant),
        }
    }

    /// Evaluates with the step and total already converted, so that the conversion happens once
    /// per evaluation rather than at every leaf.
    fn eval_at(&self, step: f64, total: f64) -> f64 {
        match self {
            Expr::Number(value) => *value,
            Expr::Step => step,
            Expr::Total => total,
            Expr::Neg(inner) => -inner.eval_at(step, total),
            Expr::Binary { op, lhs, rhs } => op.apply(lhs.eval_at(step, total), rhs.eval_at(step, total)),
            Expr::Call { func, args } => {
                // No function takes more than three arguments, so a fixed array avoids allocating
                // at every evaluation.
                let mut values = [f64::NAN; 3];
                for (value, arg) in values.iter_mut().zip(args) {
                    *value = arg.eval_at(step, total);
                }
                func.apply(values, step)
            }
        }
    }

    /// The binding strength of this expression when printed, to decide where parentheses go.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Binary { op, .. } => op.precedence(),
            Expr::Neg(_) => PREC_UNARY,
            // A negative literal (only ever built by hand) prints with a leading minus, so it
            // binds like a negation.
            Expr::Number(value) if value.is_finite() && value.is_sign_negative() => PREC_UNARY,
            _ => PREC_ATOM,
        }
    }

    /// Prints `self`, in parentheses when it binds more loosely than `min_precedence` demands.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, min_precedence: u8) -> fmt::Result {
        if self.precedence() < min_precedence {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// Printing precedence of a negation; binary operators use [`BinOp::precedence`].
const PREC_UNARY: u8 = 3;
/// Printing precedence of numbers, variables, calls: never in parentheses.
const PREC_ATOM: u8 = 4;

impl fmt::Display for Expr {
    /// Canonical form: single spaces around binary operators, parentheses only where precedence
    /// or left-associativity needs them, numbers in their shortest form that parses back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(value) => fmt_number(f, *value),
            Expr::Step => f.write_str("step"),
            Expr::Total => f.write_str("total"),
            Expr::Neg(inner) => {
                f.write_str("-")?;
                inner.fmt_operand(f, PREC_UNARY)
            }
            Expr::Binary { op, lhs, rhs } => {
                // The operators are left-associative, so a right operand of the same precedence
                // needs parentheses to keep its grouping: `1 - (2 - 3)`.
                lhs.fmt_operand(f, op.precedence())?;
                write!(f, " {op} ")?;
                rhs.fmt_operand(f, op.precedence() + 1)
            }
            Expr::Call { func, args } => {
                write!(f, "{func}(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Prints a number so that the parser reads back exactly the same `f64`.
///
/// `{:?}` gives the shortest digits that round-trip and switches to an exponent for very large or
/// small magnitudes (`1e-7`, `1e300`); the `.0` it adds to whole numbers is dropped since `80`
/// reads better than `80.0`. The grammar has no literal for infinity or NaN, so those print as
/// divisions that evaluate to them.
fn fmt_number(f: &mut fmt::Formatter<'_>, value: f64) -> fmt::Result {
    if value.is_nan() {
        f.write_str("(0 / 0)")
    } else if value == f64::INFINITY {
        f.write_str("(1 / 0)")
    } else if value == f64::NEG_INFINITY {
        f.write_str("(-1 / 0)")
    } else {
        let text = format!("{value:?}");
        f.write_str(text.strip_suffix(".0").unwrap_or(&text))
    }
}

/// A binary arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`, IEEE 754 division: dividing by zero gives infinity or NaN.
    Div,
}

impl BinOp {
    /// The operator as written in a source: `+`, `-`, `*` or `/`.
    pub fn symbol(&self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }

    fn apply(&self, lhs: f64, rhs: f64) -> f64 {
        match self {
            BinOp::Add => lhs + rhs,
            BinOp::Sub => lhs - rhs,
            BinOp::Mul => lhs * rhs,
            BinOp::Div => lhs / rhs,
        }
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A built-in function; see the [module documentation](self) for what each computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    /// `const(x)`: `x`.
    Const,
    /// `linear(from, to, steps)`: a straight line from `from` at step 0 to `to` at step `steps`.
    Linear,
    /// `cosine(from, to, steps)`: half a cosine from `from` at step 0 to `to` at step `steps`.
    Cosine,
    /// `exp(from, to, steps)`: a geometric ramp from `from` to `to`; linear unless both share a
    /// strict sign, since a geometric path through or from zero does not exist.
    Exp,
    /// `warmup(steps, x)`: a linear ramp from 0 at step 0 into `x` at step `steps`.
    Warmup,
    /// `step_at(k, before, after)`: `before` while `step < k`, then `after`.
    StepAt,
    /// `min(a, b)`: the smaller.
    Min,
    /// `max(a, b)`: the larger.
    Max,
    /// `clamp(x, lo, hi)`: `x` limited to `[lo, hi]`.
    Clamp,
}

impl Func {
    /// Every function, in the order the documentation and error messages list them.
    pub const ALL: [Func; 9] = [
        Func::Const,
        Func::Linear,
        Func::Cosine,
        Func::Exp,
        Func::Warmup,
        Func::StepAt,
        Func::Min,
        Func::Max,
        Func::Clamp,
    ];

    /// The name a source calls it by, such as `step_at`.
    pub fn name(&self) -> &'static str {
        match self {
            Func::Const => "const",
            Func::Linear => "linear",
            Func::Cosine => "cosine",
            Func::Exp => "exp",
            Func::Warmup => "warmup",
            Func::StepAt => "step_at",
            Func::Min => "min",
            Func::Max => "max",
            Func::Clamp => "clamp",
        }
    }

    /// The names of its parameters, in order, as error messages show them.
    pub fn params(&self) -> &'static [&'static str] {
        match self {
            Func::Const => &["x"],
            Func::Linear | Func::Cosine | Func::Exp => &["from", "to", "steps"],
            Func::Warmup => &["steps", "x"],
            Func::StepAt => &["k", "before", "after"],
            Func::Min | Func::Max => &["a", "b"],
            Func::Clamp => &["x", "lo", "hi"],
        }
    }

    /// How many arguments it takes.
    pub fn arity(&self) -> usize {
        self.params().len()
    }

    /// The function called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|func| func.name() == name)
    }

    /// Whether its value depends on the training step even when no argument mentions it.
    fn reads_step(&self) -> bool {
        match self {
            Func::Linear | Func::Cosine | Func::Exp | Func::Warmup | Func::StepAt => true,
            Func::Const | Func::Min | Func::Max | Func::Clamp => false,
        }
    }

    /// Applies the function to evaluated arguments; `step` feeds the functions of the step.
    fn apply(&self, [a, b, c]: [f64; 3], step: f64) -> f64 {
        match self {
            Func::Const => a,
            Func::Linear => linear(a, b, progress(step, c)),
            Func::Cosine => cosine(a, b, progress(step, c)),
            Func::Exp => geometric(a, b, progress(step, c)),
            Func::Warmup => {
                let p = progress(step, a);
                // Exactly zero at the start, even for an infinite or NaN target, since a warm-up
                // that does not start at zero defeats its purpose.
                if p == 0.0 {
                    0.0
                } else {
                    b * p
                }
            }
            Func::StepAt => {
                if step < a {
                    b
                } else {
                    c
                }
            }
            Func::Min => a.min(b),
            Func::Max => a.max(b),
            // `f64::clamp` panics when `lo > hi`; this returns `hi` then, and never panics.
            Func::Clamp => a.max(b).min(c),
        }
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of all functions, in the order of [`Func::ALL`].
pub fn known_functions() -> &'static [&'static str] {
    const NAMES: [&str; 9] = ["const", "linear", "cosine", "exp", "warmup", "step_at", "min", "max", "clamp"];
    &NAMES
}

/// The progress through a ramp of `steps` steps, in `[0, 1]`; a ramp of no steps (or a negative or
/// NaN number of them) is already over.
fn progress(step: f64, steps: f64) -> f64 {
    if steps > 0.0 {
        (step / steps).min(1.0)
    } else {
        1.0
    }
}

fn linear(from: f64, to: f64, p: f64) -> f64 {
    // Returning `to` itself at the end avoids the rounding error of `from + (to - from)`.
    if p >= 1.0 {
        return to;
    }
    within(from + (to - from) * p, from, to)
}

fn cosine(from: f64, to: f64, p: f64) -> f64 {
    if p >= 1.0 {
        return to;
    }
    within(to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()), from, to)
}

fn geometric(from: f64, to: f64, p: f64) -> f64 {
    if p >= 1.0 {
        return to;
    }
    let same_sign = (from > 0.0 && to > 0.0) || (from < 0.0 && to < 0.0);
    if same_sign {
        within(from * (to / from).powf(p), from, to)
    } else {
        // No geometric path joins values of different signs or starts from zero, so the ramp falls
        // back to a straight line rather than producing NaN.
        linear(from, to, p)
    }
}

/// `value` limited to the interval between `a` and `b`, so that rounding cannot carry a ramp past
/// its endpoints; NaN stays NaN.
fn within(value: f64, a: f64, b: f64) -> f64 {
    if value.is_nan() {
        value
    } else {
        value.max(a.min(b)).min(a.max(b))
    }
}

/// Why a schedule expression did not parse, and where.
///
/// Lines and columns are 1-based; a column counts characters, not bytes, within its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A token the grammar does not allow where it stands, such as
    /// "line 1, column 20: expected `)` or `,`, found end of input".
    #[error("line {line}, column {column}: expected {expected}, found {found}")]
    Syntax {
        /// The line of the offending token.
        line: usize,
        /// The column of the offending token.
        column: usize,
        /// What the grammar allows there, such as "`)` or `,`".
        expected: String,
        /// What is there instead, such as "`;`", "end of input" or "number `3`".
        found: String,
    },
    /// A call of a function that does not exist.
    #[error(
        "unknown function `{name}` at line {line}, column {column}; known functions: {}",
        known_functions().join(", ")
    )]
    UnknownFunction {
        /// The line of the function name.
        line: usize,
        /// The column of the function name.
        column: usize,
        /// The name called.
        name: String,
    },
    /// A call with the wrong number of arguments.
    #[error(
        "function `{name}` at line {line}, column {column} takes {expected} argument{} (`{}`), \
         got {got}",
        if *.expected == 1 { "" } else { "s" },
        signature(.name)
    )]
    Arity {
        /// The line of the function name.
        line: usize,
        /// The column of the function name.
        column: usize,
        /// The function called.
        name: String,
        /// How many arguments it takes.
        expected: usize,
        /// How many it was given.
        got: usize,
    },
    /// A bare identifier other than `step` and `total`.
    #[error("unknown identifier `{name}` at line {line}, column {column}; expected {OPERAND_EXPECTED}")]
    UnknownIdentifier {
        /// The line of the identifier.
        line: usize,
        /// The column of the identifier.
        column: usize,
        /// The identifier.
        name: String,
    },
}

impl ScheduleError {
    /// The 1-based line of the problem.
    pub fn line(&self) -> usize {
        match self {
            ScheduleError::Syntax { line, .. }
            | ScheduleError::UnknownFunction { line, .. }
            | ScheduleError::Arity { line, .. }
            | ScheduleError::UnknownIdentifier { line, .. } => *line,
        }
    }

    /// The 1-based column, in characters, of the problem within its line.
    pub fn column(&self) -> usize {
        match self {
            ScheduleError::Syntax { column, .. }
            | ScheduleError::UnknownFunction { column, .. }
            | ScheduleError::Arity { column, .. }
            | ScheduleError::UnknownIdentifier { column, .. } => *column,
        }
    }

    /// The message followed by the offending line of `src` and a caret under the column, the way
    /// rustc shows errors. `src` should be the text that failed to parse; a line it lacks is
    /// simply not shown.
    ///
    /// # Examples
    ///
    /// ```
    /// use atod_core::schedule::Schedule;
    ///
    /// let src = "min(1,\n    foo(2))";
    /// let err = Schedule::parse(src).unwrap_err();
    /// assert_eq!(
    ///     err.render(src),
    ///     "error: unknown function `foo` at line 2, column 5; known functions: const, linear, \
    ///      cosine, exp, warmup, step_at, min, max, clamp\n  |\n2 |     foo(2))\n  |     ^"
    /// );
    /// ```
    pub fn render(&self, src: &str) -> String {
        let message = format!("error: {self}");
        let Some(text) = self.line().checked_sub(1).and_then(|index| src.split('\n').nth(index)) else {
            return message;
        };
        let text = text.strip_suffix('\r').unwrap_or(text);
        let number = self.line().to_string();
        let gutter = " ".repeat(number.len());
        // Tabs are copied into the caret line so that the caret lines up whatever the tab width.
        let indent: String =
            text.chars().take(self.column().saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        format!("{message}\n{gutter} |\n{number} | {text}\n{gutter} | {indent}^")
    }
}

/// A function's call signature, such as `linear(from, to, steps)`, for arity errors.
fn signature(name: &str) -> String {
    match Func::from_name(name) {
        Some(func) => format!("{name}({})", func.params().join(", ")),
        None => name.to_owned(),
    }
}

/// One token of a source and where it starts.
#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    line: usize,
    column: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    /// A number literal with its text, which error messages quote.
    Number(f64, String),
    Ident(String),
    Plus,
    Minus,
    Star,
    Slash,
    LParen,
    RParen,
    Comma,
    /// A character that starts no token.
    Unexpected(char),
    /// A malformed number. The lexer hands its error over as a token rather than failing at once,
    /// so that the parser reports problems in source order: in `foo 1e` the unknown `foo` comes
    /// first.
    Invalid(ScheduleError),
    End,
}

impl TokenKind {
    /// How an error message names the token after "found".
    fn describe(&self) -> String {
        match self {
            TokenKind::Number(_, text) => format!("number `{text}`"),
            TokenKind::Ident(name) if name == "step" || name == "total" => format!("`{name}`"),
            TokenKind::Ident(name) => format!("identifier `{name}`"),
            TokenKind::Plus => "`+`".to_owned(),
            TokenKind::Minus => "`-`".to_owned(),
            TokenKind::Star => "`*`".to_owned(),
            TokenKind::Slash => "`/`".to_owned(),
            TokenKind::LParen => "`(`".to_owned(),
            TokenKind::RParen => "`)`".to_owned(),
            TokenKind::Comma => "`,`".to_owned(),
            TokenKind::Unexpected(c) => describe_char(Some(*c)),
            TokenKind::Invalid(_) => "an invalid token".to_owned(),
            TokenKind::End => "end of input".to_owned(),
        }
    }
}

/// How an error message names a character, or the end of input for `None`; control characters
/// are escaped so that a stray `\u{0}` stays visible.
fn describe_char(c: Option<char>) -> String {
    match c {
        None => "end of input".to_owned(),
        Some(c) if c.is_control() => format!("`{}`", c.escape_default()),
        Some(c) => format!("`{c}`"),
    }
}

/// Splits a source into tokens, tracking lines and character columns.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    column: usize,
}

impl Lexer {
    fn new(src: &str) -> Lexer {
        Lexer { chars: src.chars().collect(), pos: 0, line: 1, column: 1 }
    }

    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            self.pos += 1;
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek(0).filter(|&c| keep(c)) {
            text.push(c);
            self.bump();
        }
        text
    }

    fn next_token(&mut self) -> Token {
        self.take_while(char::is_whitespace);
        let (line, column) = (self.line, self.column);
        let starts_number =
            |c: char, next: Option<char>| c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit()));
        let kind = match self.peek(0) {
            None => TokenKind::End,
            Some(c) if starts_number(c, self.peek(1)) => self.number(line, column),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                TokenKind::Ident(self.take_while(|c| c.is_ascii_alphanumeric() || c == '_'))
            }
            Some(c) => {
                self.bump();
                match c {
                    '+' => TokenKind::Plus,
                    '-' => TokenKind::Minus,
                    '*' => TokenKind::Star,
                    '/' => TokenKind::Slash,
                    '(' => TokenKind::LParen,
                    ')' => TokenKind::RParen,
                    ',' => TokenKind::Comma,
                    other => TokenKind::Unexpected(other),
                }
            }
        };
        Token { kind, line, column }
    }

    /// Lexes `digits [. digits] [(e|E) [+|-] digits]` or `. digits ...`, starting at `line`,
    /// `column`.
    fn number(&mut self, line: usize, column: usize) -> TokenKind {
        let mut text = self.take_while(|c| c.is_ascii_digit());
        if self.peek(0) == Some('.') {
            self.bump();
            text.push('.');
            text.push_str(&self.take_while(|c| c.is_ascii_digit()));
        }
        if let Some(e @ ('e' | 'E')) = self.peek(0) {
            self.bump();
            text.push(e);
            if let Some(sign @ ('+' | '-')) = self.peek(0) {
                self.bump();
                text.push(sign);
            }
            let digits = self.take_while(|c| c.is_ascii_digit());
            if digits.is_empty() {
                return TokenKind::Invalid(ScheduleError::Syntax {
                    line: self.line,
                    column: self.column,
                    expected: format!("a digit in the exponent of `{text}`"),
                    found: describe_char(self.peek(0)),
                });
            }
            text.push_str(&digits);
        }
        // The text always has Rust's float syntax, so parsing can only fail by overflowing to
        // infinity, which the grammar has no literal for.
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => TokenKind::Number(value, text),
            _ => TokenKind::Invalid(ScheduleError::Syntax {
                line,
                column,
                expected: "a number within the range of a 64-bit float".to_owned(),
                found: format!("number `{text}`"),
            }),
        }
    }
}

/// A parsed subexpression and the depth of its tree, kept alongside so that the depth limit costs
/// nothing to check.
struct Parsed {
    expr: Expr,
    depth: usize,
}

/// A recursive-descent parser, one function per grammar rule, with one token of lookahead.
struct Parser {
    lexer: Lexer,
    current: Token,
}

impl Parser {
    fn new(src: &str) -> Parser {
        let mut lexer = Lexer::new(src);
        let current = lexer.next_token();
        Parser { lexer, current }
    }

    /// Moves to the next token and returns the one just passed.
    fn advance(&mut self) -> Token {
        let next = self.lexer.next_token();
        std::mem::replace(&mut self.current, next)
    }

    /// The error for finding the current token where `expected` was due. A malformed token
    /// reports its own error, which says more.
    fn unexpected(&self, expected: &str) -> ScheduleError {
        match &self.current.kind {
            TokenKind::Invalid(error) => error.clone(),
            found => ScheduleError::Syntax {
                line: self.current.line,
                column: self.current.column,
                expected: expected.to_owned(),
                found: found.describe(),
            },
        }
    }

    fn too_deep(line: usize, column: usize, found: String) -> ScheduleError {
        ScheduleError::Syntax {
            line,
            column,
            expected: format!("an expression nested at most {MAX_DEPTH} levels deep"),
            found,
        }
    }

    /// Wraps a new tree node, rejecting it when it makes the tree too deep; `at` is the token that
    /// built it, for the error position.
    fn node(expr: Expr, depth: usize, at: &Token) -> Result<Parsed, ScheduleError> {
        if depth > MAX_DEPTH {
            return Err(Parser::too_deep(at.line, at.column, at.kind.describe()));
        }
        Ok(Parsed { expr, depth })
    }

    fn parse_all(mut self) -> Result<Expr, ScheduleError> {
        let parsed = self.expr(0)?;
        if self.current.kind != TokenKind::End {
            return Err(self.unexpected("an operator (`+`, `-`, `*` or `/`) or end of input"));
        }
        Ok(parsed.expr)
    }

    /// `expr := term (("+" | "-") term)*`; `nesting` counts the enclosing parentheses, calls and
    /// negations, which bound the parser's own recursion.
    fn expr(&mut self, nesting: usize) -> Result<Parsed, ScheduleError> {
        let mut lhs = self.term(nesting)?;
        loop {
            let op = match self.current.kind {
                TokenKind::Plus => BinOp::Add,
                TokenKind::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            let op_token = self.advance();
            let rhs = self.term(nesting)?;
            lhs = Parser::binary(op, lhs, rhs, &op_token)?;
        }
    }

    /// `term := unary (("*" | "/") unary)*`
    fn term(&mut self, nesting: usize) -> Result<Parsed, ScheduleError> {
        let mut lhs = self.unary(nesting)?;
        loop {
            let op = match self.current.kind {
                TokenKind::Star => BinOp::Mul,
                TokenKind::Slash => BinOp::Div,
                _ => return Ok(lhs),
            };
            let op_token = self.advance();
            let rhs = self.unary(nesting)?;
            lhs = Parser::binary(op, lhs, rhs, &op_token)?;
        }
    }

    fn binary(op: BinOp, lhs: Parsed, rhs: Parsed, at: &Token) -> Result<Parsed, ScheduleError> {
        let depth = 1 + lhs.depth.max(rhs.depth);
        let expr = Expr::Binary { op, lhs: Box::new(lhs.expr), rhs: Box::new(rhs.expr) };
        Parser::node(expr, depth, at)
    }

    /// `unary := "-" unary | primary`
    fn unary(&mut self, nesting: usize) -> Result<Parsed, ScheduleError> {
        // Every operand passes through here, so this one check bounds the parser's recursion.
        if nesting > MAX_DEPTH {
            return Err(Parser::too_deep(self.current.line, self.current.column, self.current.kind.describe()));
        }
        if self.current.kind != TokenKind::Minus {
            return self.primary(nesting);
        }
        let minus = self.advance();
        let operand = self.unary(nesting + 1)?;
        Parser::node(Expr::Neg(Box::new(operand.expr)), operand.depth + 1, &minus)
    }

    /// `primary := NUMBER | "step" | "total" | IDENT "(" [expr ("," expr)*] ")" | "(" expr ")"`
    fn primary(&mut self, nesting: usize) -> Result<Parsed, ScheduleError> {
        match &self.current.kind {
            TokenKind::Number(value, _) => {
                let value = *value;
                self.advance();
                Ok(Parsed { expr: Expr::Number(value), depth: 1 })
            }
            TokenKind::LParen => {
                self.advance();
                let inner = self.expr(nesting + 1)?;
                if self.current.kind != TokenKind::RParen {
                    return Err(self.unexpected("`)`"));
                }
                self.advance();
                Ok(inner)
            }
            TokenKind::Ident(name) => {
                let name = name.clone();
                let (line, column) = (self.current.line, self.current.column);
                self.advance();
                // An identifier followed by `(` is a call whatever its name, so `step(1)` is
                // reported as an unknown function rather than as a stray `(`.
                if self.current.kind == TokenKind::LParen {
                    return self.call(name, line, column, nesting);
                }
                let expr = match name.as_str() {
                    "step" => Expr::Step,
                    "total" => Expr::Total,
                    _ => return Err(ScheduleError::UnknownIdentifier { line, column, name }),
                };
                Ok(Parsed { expr, depth: 1 })
            }
            _ => Err(self.unexpected(OPERAND_EXPECTED)),
        }
    }

    /// The rest of a call once its name has been read and `(` is the current token.
    fn call(&mut self, name: String, line: usize, column: usize, nesting: usize) -> Result<Parsed, ScheduleError> {
        // An unknown name is reported before its arguments are parsed, since the arguments of a
        // misspelt function are rarely the problem.
        let Some(func) = Func::from_name(&name) else {
            return Err(ScheduleError::UnknownFunction { line, column, name });
        };
        let open = self.advance();
        let mut args = Vec::new();
        let mut depth = 0;
        if self.current.kind != TokenKind::RParen {
            loop {
                let arg = self.expr(nesting + 1)?;
                depth = depth.max(arg.depth);
                args.push(arg.expr);
                match self.current.kind {
                    TokenKind::Comma => {
                        self.advance();
                    }
                    TokenKind::RParen => break,
                    _ => return Err(self.unexpected("`)` or `,`")),
                }
            }
        }
        self.advance();
        if args.len() != func.arity() {
            return Err(ScheduleError::Arity { line, column, name, expected: func.arity(), got: args.len() });
        }
        Parser::node(Expr::Call { func, args }, depth + 1, &open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::f64::consts::PI;

    /// Parses `src`, evaluates it at `step` of `total` and compares with `expected` to within
    /// 1e-12, relative for large values; an infinite or NaN `expected` must be matched exactly.
    #[track_caller]
    fn check(src: &str, step: u64, total: u64, expected: f64) {
        let schedule = match Schedule::parse(src) {
            Ok(schedule) => schedule,
            Err(err) => panic!("{src:?} did not parse:\n{}", err.render(src)),
        };
        let got = schedule.eval(step, total);
        let matches = if expected.is_nan() {
            got.is_nan()
        } else if expected.is_infinite() {
            got == expected
        } else {
            (got - expected).abs() <= 1e-12 * expected.abs().max(1.0)
        };
        assert!(matches, "{src:?} at step {step} of {total}: expected {expected}, got {got}");
    }

    /// Parses `src`, which must fail, and compares the error message with `expected`.
    #[track_caller]
    fn check_error(src: &str, expected: &str) {
        match Schedule::parse(src) {
            Ok(schedule) => panic!("{src:?} parsed as {schedule}, expected an error"),
            Err(err) => assert_eq!(err.to_string(), expected, "for {src:?}"),
        }
    }

    /// Parses `src` and checks its canonical printing, which must itself parse to the same tree
    /// and print the same.
    #[track_caller]
    fn check_display(src: &str, canonical: &str) {
        let parsed = Schedule::parse(src).expect("the source parses");
        assert_eq!(parsed.to_string(), canonical, "for {src:?}");
        let reparsed = Schedule::parse(canonical).expect("the canonical form parses");
        assert_eq!(reparsed.expr(), parsed.expr(), "for {src:?}");
        assert_eq!(reparsed.to_string(), canonical, "for {src:?}");
    }

    #[test]
    fn numbers_and_variables() {
        check("1", 0, 0, 1.0);
        check("0.5", 0, 0, 0.5);
        check(".5", 0, 0, 0.5);
        check("1.", 0, 0, 1.0);
        check("1e-3", 0, 0, 1e-3);
        check("2.5E+2", 0, 0, 250.0);
        check("1.e2", 0, 0, 100.0);
        check("1e-400", 0, 0, 0.0);
        check("step", 7, 100, 7.0);
        check("total", 7, 100, 100.0);
        check("step / total", 25, 100, 0.25);
        check(" \t\n 3 \r\n", 0, 0, 3.0);
    }

    #[test]
    fn precedence_and_associativity() {
        check("1 + 2 * 3", 0, 0, 7.0);
        check("-2 * 3", 0, 0, -6.0);
        check("2 - -1", 0, 0, 3.0);
        check("(1+2)*3", 0, 0, 9.0);
        check("2 * 3 + 4", 0, 0, 10.0);
        check("1 - 2 - 3", 0, 0, -4.0);
        check("8 / 4 / 2", 0, 0, 1.0);
        check("--2", 0, 0, 2.0);
        check("-(1 + 2)", 0, 0, -3.0);
        check("-step * 2", 3, 0, -6.0);
        check("10 - 2 * 3 / 4", 0, 0, 8.5);
    }

    #[test]
    fn division_by_zero_follows_ieee() {
        check("1 / 0", 0, 0, f64::INFINITY);
        check("-1 / 0", 0, 0, f64::NEG_INFINITY);
        check("0 / 0", 0, 0, f64::NAN);
        check("step / total", 0, 0, f64::NAN);
        check("linear(1, 2, 1 / 0)", 5, 0, 1.0);
        check("linear(1, 2, 0 / 0)", 5, 0, 2.0);
    }

    #[test]
    fn const_min_max_clamp() {
        check("const(4)", 0, 0, 4.0);
        check("const(step)", 9, 0, 9.0);
        check("min(1, 2)", 0, 0, 1.0);
        check("min(2, 1)", 0, 0, 1.0);
        check("max(1, 2)", 0, 0, 2.0);
        check("max(-1, -2)", 0, 0, -1.0);
        check("clamp(5, 0, 1)", 0, 0, 1.0);
        check("clamp(-5, 0, 1)", 0, 0, 0.0);
        check("clamp(0.5, 0, 1)", 0, 0, 0.5);
        check("clamp(0.5, 1, 0)", 0, 0, 0.0);
        check("min(0 / 0, 3)", 0, 0, 3.0);
    }

    #[test]
    fn linear_ramps() {
        check("linear(1.0, 0.1, 80)", 0, 100, 1.0);
        check("linear(1.0, 0.1, 80)", 40, 100, 0.55);
        check("linear(1.0, 0.1, 80)", 80, 100, 0.1);
        check("linear(1.0, 0.1, 80)", 81, 100, 0.1);
        check("linear(1.0, 0.1, 80)", 1_000_000, 100, 0.1);
        check("linear(0, 10, 100)", 25, 0, 2.5);
        check("linear(1, 2, 0)", 0, 0, 2.0);
        check("linear(1, 2, -5)", 0, 0, 2.0);
        check("linear(1, 0.1, total / 2)", 50, 200, 0.55);
        check("linear(1, 0.1, total / 2)", 50, 0, 0.1);
    }

    #[test]
    fn cosine_ramps() {
        check("cosine(1, 0, 100)", 0, 0, 1.0);
        check("cosine(1, 0, 100)", 25, 0, 0.5 * (1.0 + (PI / 4.0).cos()));
        check("cosine(1, 0, 100)", 50, 0, 0.5);
        check("cosine(1, 0, 100)", 100, 0, 0.0);
        check("cosine(1, 0, 100)", 200, 0, 0.0);
        check("cosine(0, 4, 100)", 50, 0, 2.0);
        check("cosine(1, 0, 0)", 0, 0, 0.0);
    }

    #[test]
    fn exp_ramps() {
        check("exp(1, 0.01, 100)", 0, 0, 1.0);
        check("exp(1, 0.01, 100)", 50, 0, 0.1);
        check("exp(1, 0.01, 100)", 100, 0, 0.01);
        check("exp(1, 0.01, 100)", 150, 0, 0.01);
        check("exp(-1, -100, 10)", 5, 0, -10.0);
        check("exp(1, 100, -1)", 0, 0, 100.0);
        // Values without a common strict sign have no geometric path, so the ramp is linear.
        check("exp(0, 1, 10)", 5, 0, 0.5);
        check("exp(-1, 1, 10)", 5, 0, 0.0);
        check("exp(2, 0, 10)", 5, 0, 1.0);
    }

    #[test]
    fn warmup_and_step_at() {
        check("warmup(100, 0.5)", 0, 0, 0.0);
        check("warmup(100, 0.5)", 50, 0, 0.25);
        check("warmup(100, 0.5)", 100, 0, 0.5);
        check("warmup(100, 0.5)", 500, 0, 0.5);
        check("warmup(0, 3)", 0, 0, 3.0);
        check("warmup(10, step)", 5, 0, 2.5);
        check("warmup(10, 1 / 0)", 0, 0, 0.0);
        check("warmup(10, cosine(1, 0, total))", 5, 100, 0.25 * (1.0 + (PI * 0.05).cos()));
        check("step_at(10, 1, 2)", 9, 0, 1.0);
        check("step_at(10, 1, 2)", 10, 0, 2.0);
        check("step_at(10, 1, 2)", 11, 0, 2.0);
        check("step_at(0, 1, 2)", 0, 0, 2.0);
        check("step_at(total / 2, 1, step)", 60, 100, 60.0);
    }

    #[test]
    fn multi_line_sources() {
        check("linear(1,\n  0.1,\n  80)", 40, 0, 0.55);
        check("warmup(10,\n\t2)\n", 5, 0, 1.0);
        let err = Schedule::parse("linear(1,\n  0.1 ;\n 80)").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 7));
        assert_eq!(err.to_string(), "line 2, column 7: expected `)` or `,`, found `;`");
        let err = Schedule::parse("min(1,\n\tfoo(2))").unwrap_err();
        assert!(matches!(err, ScheduleError::UnknownFunction { line: 2, column: 2, .. }));
        let err = Schedule::parse("1 +\n").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 1));
        // Columns count characters: each no-break space is two bytes but one column.
        let err = Schedule::parse("1\u{a0}\u{a0}2").unwrap_err();
        assert_eq!((err.line(), err.column()), (1, 4));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            Schedule::parse("linear(1.0, 0.1, 80"),
            Err(ScheduleError::Syntax {
                line: 1,
                column: 20,
                expected: "`)` or `,`".to_owned(),
                found: "end of input".to_owned(),
            })
        );
        check_error(
            "",
            "line 1, column 1: expected a number, `step`, `total`, a function call or `(`, \
             found end of input",
        );
        check_error(
            "1 +",
            "line 1, column 4: expected a number, `step`, `total`, a function call or `(`, \
             found end of input",
        );
        check_error(
            "1 2",
            "line 1, column 3: expected an operator (`+`, `-`, `*` or `/`) or end of input, \
             found number `2`",
        );
        check_error(
            "1 step",
            "line 1, column 3: expected an operator (`+`, `-`, `*` or `/`) or end of input, \
             found `step`",
        );
        check_error("(1", "line 1, column 3: expected `)`, found end of input");
        check_error("(1 x", "line 1, column 4: expected `)`, found identifier `x`");
        check_error(
            "1 ; 2",
            "line 1, column 3: expected an operator (`+`, `-`, `*` or `/`) or end of input, \
             found `;`",
        );
        check_error(
            "min(1,)",
            "line 1, column 7: expected a number, `step`, `total`, a function call or `(`, \
             found `)`",
        );
        check_error(
            "1 +\u{0}",
            "line 1, column 4: expected a number, `step`, `total`, a function call or `(`, \
             found `\\u{0}`",
        );
        check_error("1e", "line 1, column 3: expected a digit in the exponent of `1e`, found end of input");
        check_error("2e+x", "line 1, column 4: expected a digit in the exponent of `2e+`, found `x`");
        check_error(
            "1 + 1e400",
            "line 1, column 5: expected a number within the range of a 64-bit float, \
             found number `1e400`",
        );
        check_error(
            ". 5",
            "line 1, column 1: expected a number, `step`, `total`, a function call or `(`, \
             found `.`",
        );
    }

    #[test]
    fn name_errors() {
        check_error(
            "foo(1)",
            "unknown function `foo` at line 1, column 1; known functions: const, linear, cosine, \
             exp, warmup, step_at, min, max, clamp",
        );
        let err = Schedule::parse("foo(1)").unwrap_err();
        for name in known_functions() {
            assert!(err.to_string().contains(name), "{err}");
        }
        check_error(
            "1 + step(2)",
            "unknown function `step` at line 1, column 5; known functions: const, linear, cosine, \
             exp, warmup, step_at, min, max, clamp",
        );
        check_error(
            "foo",
            "unknown identifier `foo` at line 1, column 1; expected a number, `step`, `total`, \
             a function call or `(`",
        );
        check_error(
            "2 * Step",
            "unknown identifier `Step` at line 1, column 5; expected a number, `step`, `total`, \
             a function call or `(`",
        );
        // Problems are reported in source order, even when a later token is malformed.
        check_error(
            "foo 1e",
            "unknown identifier `foo` at line 1, column 1; expected a number, `step`, `total`, \
             a function call or `(`",
        );
    }

    #[test]
    fn arity_errors() {
        assert_eq!(
            Schedule::parse("linear(1, 2)"),
            Err(ScheduleError::Arity { line: 1, column: 1, name: "linear".to_owned(), expected: 3, got: 2 })
        );
        check_error(
            "linear(1, 2)",
            "function `linear` at line 1, column 1 takes 3 arguments (`linear(from, to, steps)`), \
             got 2",
        );
        check_error("2 * const()", "function `const` at line 1, column 5 takes 1 argument (`const(x)`), got 0");
        check_error("min(1, 2, 3)", "function `min` at line 1, column 1 takes 2 arguments (`min(a, b)`), got 3");
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        check(&nested, 0, 0, 1.0);
        let negations = format!("{}1", "-".repeat(MAX_DEPTH - 1));
        check(&negations, 0, 0, if MAX_DEPTH.is_multiple_of(2) { -1.0 } else { 1.0 });
        let sum = format!("{}1", "1 + ".repeat(MAX_DEPTH - 1));
        check(&sum, 0, 0, MAX_DEPTH as f64);
        let calls = format!("{}1{}", "const(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
        check(&calls, 0, 0, 1.0);
        // Far past the limit, each shape is an error rather than a stack overflow.
        let expected = format!("an expression nested at most {MAX_DEPTH} levels deep");
        for src in [
            "(".repeat(100_000),
            "-".repeat(100_000),
            "1+".repeat(100_000),
            "min(1,".repeat(100_000),
            "const(".repeat(100_000),
        ] {
            match Schedule::parse(&src) {
                Err(ScheduleError::Syntax { expected: got, .. }) => assert_eq!(got, expected),
                other => panic!("expected a nesting error, got {other:?}"),
            }
        }
    }

    #[test]
    fn render_points_at_the_column() {
        let src = "linear(1.0,\n\t0.1 ;\n80)";
        let err = Schedule::parse(src).unwrap_err();
        assert_eq!(
            err.render(src),
            "error: line 2, column 6: expected `)` or `,`, found `;`\n  |\n2 | \t0.1 ;\n  | \t    ^"
        );
        let src = "linear(1.0, 0.1, 80";
        let err = Schedule::parse(src).unwrap_err();
        assert_eq!(
            err.render(src),
            "error: line 1, column 20: expected `)` or `,`, found end of input\n  |\n\
             1 | linear(1.0, 0.1, 80\n  |                    ^"
        );
        // A source that lacks the error's line shows the message alone.
        let err = Schedule::parse("1 +\n").unwrap_err();
        assert_eq!(err.render("1 +"), format!("error: {err}"));
        let src = format!("{}x", "\n".repeat(11));
        let err = Schedule::parse(&src).unwrap_err();
        assert!(err.render(&src).ends_with("\n   |\n12 | x\n   | ^"), "{}", err.render(&src));
    }

    #[test]
    fn display_is_canonical() {
        check_display("1+2*3", "1 + 2 * 3");
        check_display("(1+2)*3", "(1 + 2) * 3");
        check_display("1-(2-3)", "1 - (2 - 3)");
        check_display("(1-2)-3", "1 - 2 - 3");
        check_display("1+(2+3)", "1 + (2 + 3)");
        check_display("8/(4/2)", "8 / (4 / 2)");
        check_display("(8/4)/2", "8 / 4 / 2");
        check_display("-(1+2)", "-(1 + 2)");
        check_display("-(2*3)", "-(2 * 3)");
        check_display("- -2", "--2");
        check_display("2 - -1", "2 - -1");
        check_display("2 * -step", "2 * -step");
        check_display("((step))", "step");
        check_display("linear(1.0,0.1,80)", "linear(1, 0.1, 80)");
        check_display("warmup(total/10,\n cosine(1e-3, 0, total))", "warmup(total / 10, cosine(0.001, 0, total))");
        check_display("2.5E+2", "250");
        check_display("1e-7", "1e-7");
        check_display("1e300", "1e300");
        check_display(".1 + .2", "0.1 + 0.2");
        check_display("step_at(total/2,1,2)", "step_at(total / 2, 1, 2)");
    }

    #[test]
    fn schedule_accessors() {
        let schedule = Schedule::parse(" linear(1, 0.1, 80) ").unwrap();
        assert_eq!(schedule.source(), " linear(1, 0.1, 80) ");
        assert_eq!(schedule.to_string(), "linear(1, 0.1, 80)");
        assert!(matches!(schedule.expr(), Expr::Call { func: Func::Linear, args } if args.len() == 3));
        assert_eq!("linear(1, 0.1, 80)".parse::<Schedule>().unwrap().expr(), schedule.expr());

        let constant = Schedule::constant(0.5);
        assert_eq!(constant.source(), "0.5");
        assert_eq!(constant.to_string(), "0.5");
        assert_eq!(constant.eval(123, 456), 0.5);
        assert_eq!(Schedule::from(0.5), constant);
        assert_eq!(Schedule::constant(80.0).source(), "80");
        assert_eq!(Schedule::constant(-0.5).source(), "-0.5");
        assert_eq!(Schedule::parse(Schedule::constant(-0.5).source()).unwrap().eval(0, 0), -0.5);
        for value in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let source = Schedule::constant(value).source().to_owned();
            let reparsed = Schedule::parse(&source).unwrap().eval(0, 0);
            assert!(reparsed == value || (value.is_nan() && reparsed.is_nan()), "{source}");
        }
    }

    #[test]
    fn constancy() {
        for (src, constant) in [
            ("1", true),
            ("1 + 2 * -3", true),
            ("min(1, max(2, clamp(3, 0, 1)))", true),
            ("const(4)", true),
            ("step", false),
            ("total", false),
            ("min(1, total)", false),
            ("const(step)", false),
            ("linear(1, 0.1, 80)", false),
            ("cosine(1, 0.1, 80)", false),
            ("exp(1, 0.1, 80)", false),
            ("warmup(10, 1)", false),
            ("step_at(10, 1, 2)", false),
        ] {
            assert_eq!(Schedule::parse(src).unwrap().is_constant(), constant, "{src}");
        }
        assert!(Schedule::constant(3.0).is_constant());
    }

    #[test]
    fn functions_are_listed_consistently() {
        let names: Vec<&str> = Func::ALL.iter().map(Func::name).collect();
        assert_eq!(names, known_functions());
        for func in Func::ALL {
            assert_eq!(Func::from_name(func.name()), Some(func));
            assert_eq!(func.arity(), func.params().len());
            assert_eq!(func.to_string(), func.name());
        }
        let arities: Vec<usize> = Func::ALL.iter().map(Func::arity).collect();
        assert_eq!(arities, [1, 3, 3, 3, 2, 3, 2, 2, 3]);
        assert_eq!(Func::from_name("Linear"), None);
    }

    #[test]
    fn hand_built_calls_with_wrong_arity_do_not_panic() {
        let short = Expr::Call { func: Func::Linear, args: vec![Expr::Number(1.0)] };
        assert!(short.eval(0, 0).is_nan());
        let long = Expr::Call { func: Func::Const, args: vec![Expr::Number(1.0); 5] };
        assert_eq!(long.eval(0, 0), 1.0);
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Hyper {
        a: Schedule,
        b: Schedule,
    }

    #[test]
    fn toml_accepts_numbers_and_strings() {
        let hyper: Hyper = toml::from_str("a = 0.5\nb = \"linear(1, 0.1, 80)\"\n").unwrap();
        assert_eq!(hyper.a, Schedule::constant(0.5));
        assert_eq!(hyper.a.eval(40, 100), 0.5);
        assert!((hyper.b.eval(40, 100) - 0.55).abs() < 1e-12);
        let hyper: Hyper = toml::from_str("a = 3\nb = 'step_at(5, 1, 2)'").unwrap();
        assert_eq!(hyper.a.eval(0, 0), 3.0);
        assert_eq!(hyper.b.eval(5, 0), 2.0);
    }

    #[test]
    fn toml_round_trips() {
        let hyper = Hyper { a: Schedule::constant(0.5), b: Schedule::parse("linear(1, 0.1, 80)").unwrap() };
        let text = toml::to_string(&hyper).unwrap();
        assert_eq!(text, "a = 0.5\nb = \"linear(1, 0.1, 80)\"\n");
        assert_eq!(toml::from_str::<Hyper>(&text).unwrap(), hyper);
    }

    #[test]
    fn a_bad_string_is_an_error_with_its_column() {
        let err = toml::from_str::<Hyper>("a = 0.5\nb = \"linear(1, 0.1, 80\"\n").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("line 1, column 18: expected `)` or `,`, found end of input"), "{message}");
        let err = serde_json::from_str::<Hyper>(r#"{"a": 1, "b": "foo(1)"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown function `foo` at line 1, column 1"), "{err}");
        let err = serde_json::from_str::<Hyper>(r#"{"a": true, "b": 1}"#).unwrap_err();
        assert!(err.to_string().contains("a number or a schedule expression"), "{err}");
    }

    #[test]
    fn json_round_trips() {
        let hyper: Hyper = serde_json::from_str(r#"{"a": 2, "b": "warmup(10, 1)"}"#).unwrap();
        assert_eq!(hyper.a, Schedule::constant(2.0));
        let text = serde_json::to_string(&hyper).unwrap();
        assert_eq!(text, r#"{"a":2.0,"b":"warmup(10, 1)"}"#);
        assert_eq!(serde_json::from_str::<Hyper>(&text).unwrap(), hyper);
    }

    /// Finite non-negative numbers, the only ones the parser produces: small integers and
    /// fractions as configs hold them, plus arbitrary normal and subnormal values to exercise the
    /// printer's round trip.
    fn any_literal() -> impl Strategy<Value = f64> {
        use proptest::num::f64::{NORMAL, POSITIVE, SUBNORMAL, ZERO};
        prop_oneof![(0u32..1000).prop_map(f64::from), 0.0..1.0f64, POSITIVE | NORMAL | SUBNORMAL | ZERO,]
    }

    /// Expression trees as the parser would build them.
    fn any_expr() -> impl Strategy<Value = Expr> {
        let leaf = prop_oneof![any_literal().prop_map(Expr::Number), Just(Expr::Step), Just(Expr::Total)];
        leaf.prop_recursive(6, 48, 3, |inner| {
            let ops = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div];
            prop_oneof![
                inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
                (proptest::sample::select(ops.to_vec()), inner.clone(), inner.clone())
                    .prop_map(|(op, lhs, rhs)| Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }),
                proptest::sample::select(Func::ALL.to_vec()).prop_flat_map(move |func| {
                    proptest::collection::vec(inner.clone(), func.arity())
                        .prop_map(move |args| Expr::Call { func, args })
                }),
            ]
        })
    }

    /// Whether `got` is within 1e-9 of `expected`, relative to the larger of `|expected|` and 1.
    fn close(got: f64, expected: f64) -> bool {
        (got - expected).abs() <= 1e-9 * expected.abs().max(1.0)
    }

    proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_tree(expr in any_expr()) {
            let printed = expr.to_string();
            let reparsed = Schedule::parse(&printed);
            let reparsed = reparsed.as_ref().map(Schedule::expr);
            prop_assert_eq!(reparsed, Ok(&expr), "printed as {}", printed);
        }

        #[test]
        fn ramps_stay_within_their_endpoints(
            func in proptest::sample::select(vec!["linear", "cosine", "exp"]),
            from in -1e6..1e6f64,
            to in -1e6..1e6f64,
            steps in 0u64..10_000,
            step in 0u64..20_000,
            after in 0u64..1_000,
        ) {
            let src = format!("{func}({from:?}, {to:?}, {steps})");
            let schedule = Schedule::parse(&src).expect("the ramp parses");
            let value = schedule.eval(step, 0);
            let within = from.min(to) <= value && value <= from.max(to);
            prop_assert!(within, "{} at {}: {}", src, step, value);
            prop_assert!(close(schedule.eval(steps + after, 0), to), "{} at the end", src);
        }

        #[test]
        fn geometric_ramps_of_one_sign_stay_within_their_endpoints(
            from in 1e-6..1e6f64,
            to in 1e-6..1e6f64,
            negative in any::<bool>(),
            steps in 1u64..10_000,
            step in 0u64..20_000,
        ) {
            let sign = if negative { -1.0 } else { 1.0 };
            let (from, to) = (sign * from, sign * to);
            let src = format!("exp({from:?}, {to:?}, {steps})");
            let schedule = Schedule::parse(&src).expect("the ramp parses");
            let value = schedule.eval(step, 0);
            let within = from.min(to) <= value && value <= from.max(to);
            prop_assert!(within, "{} at {}: {}", src, step, value);
            prop_assert!(close(schedule.eval(0, 0), from), "{} at 0", src);
            prop_assert!(close(schedule.eval(steps, 0), to), "{} at the end", src);
        }

        #[test]
        fn warmup_ramps_from_zero_into_its_target(
            steps in 1u64..10_000,
            a in -1e3..1e3f64,
            b in -1e3..1e3f64,
            total in 1u64..20_000,
            after in 0u64..20_000,
        ) {
            let target = format!("cosine({a:?}, {b:?}, total)");
            let warm = Schedule::parse(&format!("warmup({steps}, {target})")).expect("parses");
            let target = Schedule::parse(&target).expect("parses");
            prop_assert_eq!(warm.eval(0, total), 0.0);
            prop_assert_eq!(warm.eval(steps + after, total), target.eval(steps + after, total));
        }

        #[test]
        fn clamp_stays_within_its_bounds(x in -1e6..1e6f64, a in -1e6..1e6f64, b in -1e6..1e6f64) {
            let (lo, hi) = (a.min(b), a.max(b));
            let src = format!("clamp({x:?}, {lo:?}, {hi:?})");
            let value = Schedule::parse(&src).expect("parses").eval(0, 0);
            prop_assert!(lo <= value && value <= hi);
            prop_assert_eq!(value, x.max(lo).min(hi));
        }

        #[test]
        fn step_at_switches_exactly_at_k(k in 1u64..10_000, after in 0u64..10_000) {
            let schedule = Schedule::parse(&format!("step_at({k}, 1, 2)")).expect("parses");
            prop_assert_eq!(schedule.eval(k - 1, 0), 1.0);
            prop_assert_eq!(schedule.eval(k, 0), 2.0);
            prop_assert_eq!(schedule.eval(k + after, 0), 2.0);
        }

        #[test]
        fn parsing_never_panics_on_arbitrary_text(src in ".*") {
            exercise(&src);
        }

        #[test]
        fn parsing_never_panics_on_near_misses(src in "[0-9a-z_().,+*/ eE\t\n-]{0,48}") {
            exercise(&src);
        }
    }

    /// Parses `src` and, whatever the outcome, uses the result the ways a caller would: evaluate
    /// and print a schedule (whose printing must parse back to the same tree), render an error.
    fn exercise(src: &str) {
        match Schedule::parse(src) {
            Ok(schedule) => {
                for (step, total) in [(0, 0), (1, 10), (u64::MAX, 3)] {
                    schedule.eval(step, total);
                }
                let printed = schedule.to_string();
                let reparsed = Schedule::parse(&printed).expect("the printed form parses");
                assert_eq!(reparsed.expr(), schedule.expr(), "{src:?} printed as {printed:?}");
            }
            Err(err) => {
                let rendered = err.render(src);
                assert!(rendered.starts_with("error: "));
                assert!(err.line() >= 1 && err.column() >= 1);
            }
        }
    }
}
