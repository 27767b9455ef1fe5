//! The plugin's errors and the CNI error object they print: `{"cniVersion","code","msg",
//! "details"}` on stdout, with a non-zero exit. Codes 0–99 are the spec's well-known ones
//! (SPEC.md "Error"); 100 and up are this plugin's own, listed on [`Error`].

use serde_json::{Value, json};

/// Why a command failed. The variant gives the code, the text the details.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Code 1: the configuration's `cniVersion` is one this plugin does not speak.
    #[error("cniVersion {0:?} is not supported (supported: 0.4.0, 1.0.0, 1.1.0)")]
    IncompatibleVersion(String),
    /// Code 4: a CNI_* environment variable is missing or malformed.
    #[error("{var}: {why}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Code 5: reading stdin or the plugin's state directory failed.
    #[error("{0}")]
    Io(String),
    /// Code 6: stdin is not a JSON object.
    #[error("the network configuration on stdin is not JSON: {0}")]
    Decode(String),
    /// Code 7: the configuration is JSON but not a valid vswitch network configuration.
    #[error("{0}")]
    InvalidConfig(String),
    /// Code 11: a transient condition (the daemon is busy or restarting): try again.
    #[error("{0}")]
    TryAgain(String),
    /// Code 50 (STATUS): the plugin cannot serve ADD now (no daemon, or no such network).
    #[error("{0}")]
    NotAvailable(String),
    /// Code 100: the vswitch daemon's control socket cannot be reached.
    #[error("{0}")]
    DaemonUnreachable(String),
    /// Code 101: the daemon refused the request; its text says why.
    #[error("{0}")]
    DaemonRefused(String),
    /// Code 102 (CHECK): the attachment is not as ADD made it.
    #[error("{0}")]
    CheckFailed(String),
    /// Code 103: the daemon answered something this plugin cannot read.
    #[error("unexpected answer from the vswitch daemon: {0}")]
    BadAnswer(String),
}

impl Error {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => 1,
            Error::InvalidEnv { .. } => 4,
            Error::Io(_) => 5,
            Error::Decode(_) => 6,
            Error::InvalidConfig(_) => 7,
            Error::TryAgain(_) => 11,
            Error::NotAvailable(_) => 50,
            Error::DaemonUnreachable(_) => 100,
            Error::DaemonRefused(_) => 101,
            Error::CheckFailed(_) => 102,
            Error::BadAnswer(_) => 103,
        }
    }

    /// The short message (`msg`): what kind of failure.
    pub fn msg(&self) -> &'static str {
        match self {
            Error::IncompatibleVersion(_) => "incompatible CNI version",
            Error::InvalidEnv { .. } => "invalid environment variables",
            Error::Io(_) => "I/O failure",
            Error::Decode(_) => "failed to decode content",
            Error::InvalidConfig(_) => "invalid network config",
            Error::TryAgain(_) => "try again later",
            Error::NotAvailable(_) => "plugin not available",
            Error::DaemonUnreachable(_) => "vswitch daemon unreachable",
            Error::DaemonRefused(_) => "vswitch daemon refused the request",
            Error::CheckFailed(_) => "attachment differs from what ADD made",
            Error::BadAnswer(_) => "bad answer from the vswitch daemon",
        }
    }

    /// The error object for `cni_version` (the configuration's, or the plugin's preferred one
    /// when there is no readable configuration).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.msg(),
            "details": self.to_string(),
        })
    }

    /// A failed daemon call, by why it failed: no daemon (100), a transient failure (11), a
    /// refusal (101), an unreadable answer (103).
    pub fn from_call(what: &str, e: control::CallError) -> Error {
        use control::CallError as C;
        use std::io::ErrorKind as K;
        match e {
            C::Connect { reason, .. }
                if matches!(reason.kind(), K::WouldBlock | K::Interrupted | K::TimedOut) =>
            {
                Error::TryAgain(format!("{what}: the daemon is busy ({reason})"))
            }
            e @ C::Connect { .. } => Error::DaemonUnreachable(format!("{what}: {e}")),
            C::Io(io) if matches!(io.kind(), K::WouldBlock | K::TimedOut) => {
                Error::TryAgain(format!("{what}: the daemon did not answer in time ({io})"))
            }
            e @ (C::Io(_) | C::NoAnswer) => Error::DaemonUnreachable(format!("{what}: {e}")),
            C::BadAnswer(e) => Error::BadAnswer(format!("{what}: {e}")),
            C::Refused(text) => Error::DaemonRefused(format!("{what}: {text}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_has_the_spec_fields() {
        let e = Error::InvalidEnv {
            var: "CNI_NETNS",
            why: "missing".into(),
        };
        let v = e.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "invalid environment variables");
        assert_eq!(v["details"], "CNI_NETNS: missing");
    }

    #[test]
    fn codes_follow_the_spec() {
        assert_eq!(Error::IncompatibleVersion("9".into()).code(), 1);
        assert_eq!(Error::Io(String::new()).code(), 5);
        assert_eq!(Error::Decode(String::new()).code(), 6);
        assert_eq!(Error::InvalidConfig(String::new()).code(), 7);
        assert_eq!(Error::TryAgain(String::new()).code(), 11);
        assert_eq!(Error::NotAvailable(String::new()).code(), 50);
        assert!(Error::DaemonUnreachable(String::new()).code() >= 100);
    }

    #[test]
    fn call_errors_map_to_codes() {
        let gone = control::CallError::Connect {
            path: "/nonexistent".into(),
            reason: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(Error::from_call("connect", gone).code(), 100);
        let busy = control::CallError::Connect {
            path: "/x".into(),
            reason: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        };
        assert_eq!(Error::from_call("connect", busy).code(), 11);
        let refused = Error::from_call("connect", control::CallError::Refused("no".into()));
        assert_eq!(refused.code(), 101);
        assert_eq!(refused.to_string(), "connect: no");
    }
}
