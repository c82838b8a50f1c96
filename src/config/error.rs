//! Error types of configuration loading: one `ConfigError` per problem, each
//! naming the file, line, column and key path; `ConfigErrors` carries them all
//! so the operator sees every problem in one run.

use std::fmt;

/// One problem in a configuration file.
///
/// Displays as `file:line:column: path: message`; the `path: ` part is left
/// out when the problem concerns the whole document (empty path). Lines and
/// columns are 1-based; an error with no position in the file (e.g. the file
/// cannot be read) has line 0 and column 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Key path such as `upstreams[1].discovery.static[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
