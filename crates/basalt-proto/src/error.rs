//! The one Bedrock error table: every failure a client can see is a
//! [`BedrockError`], and its status, `x-amzn-ErrorType` and in-stream member
//! name come from here alone.

use std::fmt;

/// Error shapes from the botocore service models (plus the auth errors that AWS's
/// front door sends for every service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    AccessDenied,
    Conflict,
    /// A model or service the request depends on failed (bedrock-agent-runtime).
    DependencyFailed,
    InternalServer,
    ModelError,
    ModelNotReady,
    ModelStreamError,
    ModelTimeout,
    ResourceNotFound,
    ServiceQuotaExceeded,
    ServiceUnavailable,
    Throttling,
    Validation,
    // Authentication, answered before any operation runs.
    UnrecognizedClient,
    InvalidSignature,
    IncompleteSignature,
    MissingAuthenticationToken,
    UnknownOperation,
}

impl ErrorCode {
    /// The shape name botocore maps to an exception class.
    pub fn shape_name(self) -> &'static str {
        match self {
            Self::AccessDenied => "AccessDeniedException",
            Self::Conflict => "ConflictException",
            Self::DependencyFailed => "DependencyFailedException",
            Self::InternalServer => "InternalServerException",
            Self::ModelError => "ModelErrorException",
            Self::ModelNotReady => "ModelNotReadyException",
            Self::ModelStreamError => "ModelStreamErrorException",
            Self::ModelTimeout => "ModelTimeoutException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            Self::ServiceUnavailable => "ServiceUnavailableException",
            Self::Throttling => "ThrottlingException",
            Self::Validation => "ValidationException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::UnknownOperation => "UnknownOperationException",
        }
    }

    /// HTTP status from the shape's `error` trait (bedrock-runtime and bedrock agree on these).
    pub fn status(self) -> u16 {
        match self {
            Self::AccessDenied | Self::UnrecognizedClient | Self::InvalidSignature => 403,
            Self::MissingAuthenticationToken => 403,
            Self::Conflict
            | Self::ServiceQuotaExceeded
            | Self::Validation
            | Self::IncompleteSignature => 400,
            Self::InternalServer => 500,
            Self::ModelError | Self::ModelStreamError | Self::DependencyFailed => 424,
            Self::ModelNotReady | Self::Throttling => 429,
            Self::ModelTimeout => 408,
            Self::ResourceNotFound | Self::UnknownOperation => 404,
            Self::ServiceUnavailable => 503,
        }
    }

    /// The member name of this error in the runtime's response-stream unions, if it has one.
    /// In-stream exceptions must use it, or botocore reports an empty code.
    pub fn stream_member(self) -> Option<&'static str> {
        Some(match self {
            Self::InternalServer => "internalServerException",
            Self::ModelStreamError => "modelStreamErrorException",
            Self::Validation => "validationException",
            Self::DependencyFailed => "dependencyFailedException",
            Self::Throttling => "throttlingException",
            Self::ModelTimeout => "modelTimeoutException",
            Self::ServiceUnavailable => "serviceUnavailableException",
            _ => return None,
        })
    }
}

/// A failure as the client will see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockError {
    pub code: ErrorCode,
    pub message: String,
}

impl BedrockError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }

    /// Bedrock's wording for a constraint failure on one member.
    pub fn constraint(path: &str, value: impl fmt::Display, rule: &str) -> Self {
        Self::validation(format!(
            "1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: {rule}"
        ))
    }

    /// A required member is absent.
    pub fn missing(path: &str) -> Self {
        Self::validation(format!("Malformed input request: required key [{path}] not found, please reformat your input and try again."))
    }

    pub fn invalid_model_id() -> Self {
        Self::validation("The provided model identifier is invalid.")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalServer, message)
    }

    /// The JSON body for this error.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}

impl fmt::Display for BedrockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.shape_name(), self.message)
    }
}

impl std::error::Error for BedrockError {}

/// Parses a JSON body, naming the offending member in the error.
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BedrockError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at_root = matches!(path.as_str(), "" | "." | "?");
        if at_root && (inner.is_syntax() || inner.is_eof()) {
            BedrockError::validation(format!("Malformed input request: the body is not valid JSON ({inner}). Please reformat your input and try again."))
        } else if at_root {
            BedrockError::validation(format!("Malformed input request: {inner}, please reformat your input and try again."))
        } else {
            // Includes a union object with more than one member, which serde reports as syntax.
            BedrockError::validation(format!(
                "Malformed input request: #/{path}: {inner}, please reformat your input and try again."
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        max_tokens: u32,
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        temperature: f32,
    }

    #[test]
    fn statuses_follow_the_service_model() {
        assert_eq!(ErrorCode::Throttling.status(), 429);
        assert_eq!(ErrorCode::ModelNotReady.status(), 429);
        assert_eq!(ErrorCode::Validation.status(), 400);
        assert_eq!(ErrorCode::ModelError.status(), 424);
        assert_eq!(ErrorCode::ModelTimeout.status(), 408);
        assert_eq!(ErrorCode::UnrecognizedClient.status(), 403);
    }

    #[test]
    fn stream_members_are_lower_camel() {
        assert_eq!(
            ErrorCode::Throttling.stream_member(),
            Some("throttlingException")
        );
        assert_eq!(ErrorCode::ResourceNotFound.stream_member(), None);
    }

    #[test]
    fn wrong_type_names_the_member() {
        let e = from_json::<Body>(br#"{"max_tokens":"ten","inner":{"temperature":1}}"#)
            .expect_err("bad");
        assert_eq!(e.code, ErrorCode::Validation);
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        let e = from_json::<Body>(br#"{"max_tokens":1,"inner":{"temperature":"hot"}}"#)
            .expect_err("bad");
        assert!(e.message.contains("inner.temperature"), "{}", e.message);
    }

    #[test]
    fn missing_member_is_named() {
        let e = from_json::<Body>(br#"{"inner":{"temperature":1}}"#).expect_err("bad");
        assert!(e.message.contains("max_tokens"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_say_so() {
        let e = from_json::<Body>(b"{nope").expect_err("bad");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
    }

    #[test]
    fn body_is_a_message_object() {
        let e = BedrockError::validation("x \"y\"");
        assert_eq!(e.body(), r#"{"message":"x \"y\""}"#);
    }
}
