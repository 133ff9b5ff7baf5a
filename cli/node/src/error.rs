//! The library's error: one line for the user, saying what failed and what to do. Context is
//! folded into the message (`what: cause`) rather than chained, so `{:#}` in the binary prints
//! each part once.

use std::fmt::Display;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure described in full by its message.
    #[error("{0}")]
    Msg(String),
    /// The named item, rule or share is not here.
    #[error("{0}")]
    NotFound(String),
    /// It is already here (adding it twice).
    #[error("{0}")]
    Conflict(String),
    /// A lower layer's error with what we were doing when it happened.
    #[error("{context}: {cause}")]
    Context {
        context: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An error of a lower crate (store, session, DHT, mount...), whose message says it all.
    #[error(transparent)]
    Lower(Box<dyn std::error::Error + Send + Sync>),
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

macro_rules! lower {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Lower(Box::new(e))
            }
        }
    )*};
}

lower!(
    ccbt_xet::shares::ShareError,
    ccbt_xet::sync::SyncError,
    ccbt_xet::net::NetError,
    ccbt_xet::tree::TreeError,
    ccbt_xet::head::HeadError,
    ccbt_xet::listing::ListingError,
    ccbt_cas::CasError,
    ccbt_core::session::SessionError,
    ccbt_core::session::metadata_fetch::FetchError,
    ccbt_core::session::tracker_client::AnnounceError,
    ccbt_core::resume::CheckpointError,
    ccbt_core::MetainfoError,
    ccbt_core::magnet::MagnetError,
    ccbt_core::create::CreateError,
    ccbt_dht::service::DhtError,
    serde_json::Error,
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Display) -> Error {
        Error::Msg(m.to_string())
    }
}

/// `anyhow`-style context on results and options, producing [`Error`].
pub trait Context<T> {
    fn context<C: Display>(self, c: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, c: C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: c.to_string(),
            cause: Box::new(e),
        })
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            cause: Box::new(e),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, c: C) -> Result<T> {
        self.ok_or_else(|| Error::Msg(c.to_string()))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Msg(f().to_string()))
    }
}

/// Returns early with an [`Error::Msg`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Msg(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_as_one_line() {
        let e: Result<()> = Err(std::io::Error::other("disk on fire")).context("cannot open x");
        assert_eq!(e.unwrap_err().to_string(), "cannot open x: disk on fire");
        let n: Result<u8> = None.context("no such share");
        assert_eq!(n.unwrap_err().to_string(), "no such share");
    }
}
