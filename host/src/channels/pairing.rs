//! Sender pairing: the codes unknown senders get, the one reply that
//! carries a code, and the operator's side (list, approve, dismiss) shared by
//! the protocol methods, the HTTP API and `pincer pairing`.
//!
//! A code is 8 characters from A-Z and 2-9 without the ambiguous `I`, `O`,
//! `0` and `1`; it expires after [`CODE_TTL_MS`], and a channel account has
//! at most [`MAX_PENDING`] unexpired codes at once. Approvals persist in the
//! store until removed there.

use rand::Rng;

use crate::clock::SharedClock;
use crate::store::{
    ApproveOutcome, ApprovedSender, PairingNotice, PairingRequest, RequestOutcome, SharedPairing,
    StoreError,
};

/// Characters a pairing code is made of (no `I`, `O`, `0`, `1`).
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Length of a pairing code.
pub const CODE_LEN: usize = 8;
/// How long a pairing code is accepted (1 hour).
pub const CODE_TTL_MS: u64 = 60 * 60 * 1000;
/// Most unexpired pending requests per channel account.
pub const MAX_PENDING: usize = 3;
/// The account of a channel that has only one (every 0.1.0 channel).
pub const DEFAULT_ACCOUNT: &str = "default";

/// A fresh random pairing code.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// `input` as a code (trimmed, upper-cased), or `None` if it cannot be one.
pub fn normalize_code(input: &str) -> Option<String> {
    let code = input.trim().to_ascii_uppercase();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// The message an unknown sender of `account` of channel `channel`
/// receives with their code.
pub fn reply_text(channel: &str, account: &str, sender: &str, code: &str) -> String {
    let flag = if account == DEFAULT_ACCOUNT {
        String::new()
    } else {
        format!(" --account {account}")
    };
    format!(
        "Pincer: you are not yet allowed to talk to this agent.\n\n\
         Your {channel} sender id: {sender}\n\
         Pairing code: {code}\n\n\
         Ask the operator to approve it (valid for 1 hour):\n\
         pincer pairing approve {channel} {code}{flag}"
    )
}

/// Why an operator's pairing action failed.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    /// The text cannot be a pairing code.
    #[error("`{0}` is not a pairing code (8 characters, A-Z and 2-9)")]
    InvalidCode(String),
    /// No pending request has this code.
    #[error("no pending pairing request with code {code} on {channel} (account {account})")]
    UnknownCode {
        /// Channel.
        channel: String,
        /// Account.
        account: String,
        /// The code.
        code: String,
    },
    /// The code expired.
    #[error("pairing code {0} has expired; the sender gets a new one with their next message")]
    Expired(String),
    /// The account id is empty.
    #[error("accountId must not be empty")]
    InvalidAccount,
    /// `pincer pairing` found no database in the data directory.
    #[error("no Pincer database at {} (start the gateway once, or pass --data-dir)", .0.display())]
    NoDatabase(std::path::PathBuf),
    /// The store failed.
    #[error("pairing store: {0}")]
    Store(#[from] StoreError),
}

/// What `list` shows for one channel.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingList {
    /// Channel name.
    pub channel: String,
    /// Unexpired pending requests, oldest first.
    pub pending: Vec<PairingRequest>,
    /// Approved senders.
    pub approved: Vec<ApprovedSender>,
}

/// Pairing state over a store, with the clock that dates codes.
#[derive(Clone)]
pub struct Pairing {
    store: SharedPairing,
    clock: SharedClock,
}

impl std::fmt::Debug for Pairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pairing").finish_non_exhaustive()
    }
}

fn account_id(account: Option<&str>) -> Result<&str, PairingError> {
    match account {
        None => Ok(DEFAULT_ACCOUNT),
        Some(a) if a.trim().is_empty() => Err(PairingError::InvalidAccount),
        Some(a) => Ok(a),
    }
}

impl Pairing {
    /// Pairing over `store`, dated by `clock`.
    pub fn new(store: SharedPairing, clock: SharedClock) -> Self {
        Pairing { store, clock }
    }

    /// Pairing over the default database in `data_dir` (its SQLite
    /// file); see [`Pairing::open`].
    pub fn open_data_dir(data_dir: &std::path::Path) -> Result<Self, PairingError> {
        Self::open(data_dir, &crate::store::StoreConfig::default())
    }

    /// Pairing over the store `config` names for the gateway on
    /// `data_dir` (`pincer pairing`, with `--store`/`PINCER_STORE`/the
    /// config file's `[store]`): the PostgreSQL database of a
    /// `postgres://` URL, else the SQLite file, which must exist already.
    /// Safe while gateways run on the same store: they see approvals at
    /// the sender's next message.
    pub fn open(
        data_dir: &std::path::Path,
        config: &crate::store::StoreConfig,
    ) -> Result<Self, PairingError> {
        if let Some(db) = crate::store::sqlite_path(data_dir, config)
            && !db.is_file()
        {
            return Err(PairingError::NoDatabase(db));
        }
        let store = crate::store::open(data_dir, config)?;
        Ok(Pairing::new(store, crate::clock::system()))
    }

    fn now(&self) -> i64 {
        self.clock.now_ms() as i64
    }

    /// Whether `sender` is approved on the channel account.
    pub fn is_approved(
        &self,
        channel: &str,
        account: &str,
        sender: &str,
    ) -> Result<bool, StoreError> {
        self.store.is_approved(channel, account, sender)
    }

    /// Give an unknown sender a code unless they have one or the account is
    /// full (see [`crate::store::PairingStore::request_pairing`]); the
    /// reply `notice` builds for the new request is committed to the outbox
    /// in the same transaction as the code.
    pub fn request(
        &self,
        channel: &str,
        account: &str,
        sender: &str,
        sender_name: Option<&str>,
        conversation: &str,
        notice: impl FnOnce(&PairingRequest) -> Result<PairingNotice, StoreError>,
    ) -> Result<RequestOutcome, StoreError> {
        let now = self.now();
        let request = PairingRequest {
            channel: channel.to_string(),
            account_id: account.to_string(),
            code: new_code(),
            sender: sender.to_string(),
            sender_name: sender_name.map(str::to_string),
            conversation: conversation.to_string(),
            created_ms: now,
            expires_ms: now.saturating_add(CODE_TTL_MS as i64),
        };
        let notice = notice(&request)?;
        self.store
            .request_pairing(&request, &notice, now, MAX_PENDING)
    }

    /// Pending requests and approved senders of `channel` (one account, or
    /// all when `account` is `None`).
    pub fn list(&self, channel: &str, account: Option<&str>) -> Result<PairingList, PairingError> {
        if account.is_some() {
            account_id(account)?;
        }
        Ok(PairingList {
            channel: channel.to_string(),
            pending: self.store.pending_pairings(channel, account, self.now())?,
            approved: self.store.approved_senders(channel, account)?,
        })
    }

    /// Approve the sender holding `code`: their next message is answered.
    pub fn approve(
        &self,
        channel: &str,
        account: Option<&str>,
        code: &str,
    ) -> Result<ApprovedSender, PairingError> {
        let account = account_id(account)?;
        let code = normalize_code(code).ok_or_else(|| PairingError::InvalidCode(code.into()))?;
        match self
            .store
            .approve_pairing(channel, account, &code, self.now())?
        {
            ApproveOutcome::Approved(a) => {
                tracing::info!(channel, account, sender = %a.sender, "pairing approved");
                Ok(a)
            }
            ApproveOutcome::Expired => Err(PairingError::Expired(code)),
            ApproveOutcome::Unknown => Err(PairingError::UnknownCode {
                channel: channel.into(),
                account: account.into(),
                code,
            }),
        }
    }

    /// Drop the request holding `code` without approving it.
    pub fn dismiss(
        &self,
        channel: &str,
        account: Option<&str>,
        code: &str,
    ) -> Result<PairingRequest, PairingError> {
        let account = account_id(account)?;
        let code = normalize_code(code).ok_or_else(|| PairingError::InvalidCode(code.into()))?;
        match self.store.dismiss_pairing(channel, account, &code)? {
            Some(r) => {
                tracing::info!(channel, account, sender = %r.sender, "pairing request dismissed");
                Ok(r)
            }
            None => Err(PairingError::UnknownCode {
                channel: channel.into(),
                account: account.into(),
                code,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), CODE_LEN);
            assert!(!c.contains(['I', 'O', '0', '1']), "{c}");
            assert_eq!(normalize_code(&c.to_lowercase()), Some(c));
        }
        assert_eq!(CODE_ALPHABET.len(), 32);
        assert_eq!(normalize_code(" abcd2345 "), Some("ABCD2345".into()));
        assert_eq!(normalize_code("ABCD1234"), None);
        assert_eq!(normalize_code("ABCD234"), None);
    }
}
