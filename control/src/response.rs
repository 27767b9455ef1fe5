//! Responses: `{"ok":true,"result":...}` or `{"ok":false,"error":"what to do"}`, one line each.

use serde::{Deserialize, Serialize};

/// A control response.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(error: impl std::fmt::Display) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(error.to_string()),
        }
    }
}
