//! Names that identify who emitted an event.

use std::fmt;

use serde::Serialize;

/// Longest service name or user id accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} bytes long; at most {MAX_NAME_BYTES} are allowed")]
    TooLong(usize),
    #[error("contains a control character")]
    ControlCharacter,
}

/// The service that emitted an event: 1..=128 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

impl ServiceName {
    /// Checks the rules and wraps the name.
    pub fn parse(name: impl Into<String>) -> Result<ServiceName, NameError> {
        let name = name.into();
        check_len(&name)?;
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(ServiceName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The user an event belongs to: 1..=128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Checks the length and wraps the id.
    pub fn parse(id: impl Into<String>) -> Result<UserId, NameError> {
        let id = id.into();
        check_len(&id)?;
        Ok(UserId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

fn check_len(name: &str) -> Result<(), NameError> {
    match name.len() {
        0 => Err(NameError::Empty),
        n if n > MAX_NAME_BYTES => Err(NameError::TooLong(n)),
        _ => Ok(()),
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_within_the_rules_parse() {
        assert_eq!(ServiceName::parse("checkout").unwrap().as_str(), "checkout");
        assert!(ServiceName::parse("ä".repeat(64)).is_ok()); // 128 bytes
        assert!(ServiceName::parse("a b/c-d_é").is_ok());
    }

    #[test]
    fn service_names_breaking_the_rules_are_refused() {
        assert_eq!(ServiceName::parse(""), Err(NameError::Empty));
        assert_eq!(ServiceName::parse("x".repeat(129)), Err(NameError::TooLong(129)));
        assert_eq!(ServiceName::parse("ä".repeat(65)), Err(NameError::TooLong(130)));
        assert_eq!(ServiceName::parse("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(ServiceName::parse("a\u{7f}"), Err(NameError::ControlCharacter));
    }

    #[test]
    fn user_ids_only_check_length() {
        assert!(UserId::parse("u\t1").is_ok());
        assert_eq!(UserId::parse(""), Err(NameError::Empty));
        assert_eq!(UserId::parse("u".repeat(129)), Err(NameError::TooLong(129)));
    }
}
