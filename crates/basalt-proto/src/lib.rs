//! Bedrock wire types and the error table. No HTTP framework and no runtime:
//! only shapes, their (de)serialisation, and the mapping of every failure to
//! the error botocore expects.

pub mod control;
pub mod converse;
pub mod error;

pub use error::{from_json, BedrockError, ErrorCode};
