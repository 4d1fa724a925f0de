//! The swarm's invites, indexed by the hashes of their tokens and short codes.

use std::collections::{BTreeMap, HashMap};

use shared_protocol::{ErrorCode, InviteView};

use crate::records::InviteRecord;
use crate::Millis;

#[derive(Debug, Default)]
pub struct Invites {
    by_id: BTreeMap<String, InviteRecord>,
    by_token: HashMap<String, String>,
    by_code: HashMap<String, String>,
}

/// Which secret a device presented.
pub enum Presented<'a> {
    TokenHash(&'a str),
    CodeHash(&'a str),
}

impl Invites {
    pub fn insert(&mut self, record: InviteRecord) {
        self.by_token
            .insert(record.token_hash.clone(), record.invite_id.clone());
        self.by_code
            .insert(record.code_hash.clone(), record.invite_id.clone());
        self.by_id.insert(record.invite_id.clone(), record);
    }

    pub fn get_mut(&mut self, invite_id: &str) -> Option<&mut InviteRecord> {
        self.by_id.get_mut(invite_id)
    }

    /// Uses the invite if it is valid at `now`: counts the use and returns the updated record
    /// (to persist). Otherwise the reason, and nothing changes.
    pub fn redeem(
        &mut self,
        now: Millis,
        presented: Presented<'_>,
    ) -> Result<InviteRecord, ErrorCode> {
        let id = match presented {
            Presented::TokenHash(hash) => self.by_token.get(hash),
            Presented::CodeHash(hash) => self.by_code.get(hash),
        }
        .ok_or(ErrorCode::InviteInvalid)?;
        let invite = self.by_id.get_mut(id).ok_or(ErrorCode::InviteInvalid)?;
        if invite.revoked {
            return Err(ErrorCode::InviteRevoked);
        }
        if now >= invite.expires_ms {
            return Err(ErrorCode::InviteExpired);
        }
        if invite.max_uses.is_some_and(|max| invite.uses >= max) {
            return Err(ErrorCode::InviteExhausted);
        }
        invite.uses = invite.uses.saturating_add(1);
        Ok(invite.clone())
    }

    /// Invites that can still be used, oldest first.
    pub fn live(&self, now: Millis) -> Vec<InviteView> {
        let mut live: Vec<InviteView> = self
            .by_id
            .values()
            .filter(|i| {
                !i.revoked && now < i.expires_ms && i.max_uses.is_none_or(|max| i.uses < max)
            })
            .map(view)
            .collect();
        live.sort_by_key(|i| i.created_ms);
        live
    }
}

pub fn view(record: &InviteRecord) -> InviteView {
    InviteView {
        invite_id: record.invite_id.clone(),
        created_ms: record.created_ms,
        expires_ms: record.expires_ms,
        max_uses: record.max_uses,
        uses: record.uses,
        revoked: record.revoked,
    }
}

/// Why an invite was refused, for people.
pub fn refusal_text(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InviteExpired => "this invite has expired: ask the swarm's owner for a new one",
        ErrorCode::InviteRevoked => "this invite was revoked by the swarm's owner",
        ErrorCode::InviteExhausted => "this invite has been used as often as it allows",
        ErrorCode::InviteRequired => "a new device needs an invite (link, QR code or short code)",
        _ => "no such invite: check the link or code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, expires_ms: Millis, max_uses: Option<u32>) -> InviteRecord {
        InviteRecord {
            invite_id: id.into(),
            token_hash: format!("t-{id}"),
            code_hash: format!("c-{id}"),
            created_ms: 0,
            expires_ms,
            max_uses,
            uses: 0,
            revoked: false,
        }
    }

    #[test]
    fn redeem_checks_revocation_expiry_and_uses() {
        let mut invites = Invites::default();
        invites.insert(record("a", 1_000, Some(2)));
        assert_eq!(
            invites
                .redeem(0, Presented::TokenHash("t-a"))
                .map(|r| r.uses),
            Ok(1)
        );
        assert_eq!(
            invites
                .redeem(0, Presented::CodeHash("c-a"))
                .map(|r| r.uses),
            Ok(2)
        );
        assert_eq!(
            invites.redeem(0, Presented::TokenHash("t-a")),
            Err(ErrorCode::InviteExhausted)
        );
        assert_eq!(
            invites.redeem(0, Presented::TokenHash("t-b")),
            Err(ErrorCode::InviteInvalid)
        );
        assert_eq!(
            invites.redeem(0, Presented::CodeHash("t-a")),
            Err(ErrorCode::InviteInvalid),
            "a token is not a code"
        );

        invites.insert(record("b", 1_000, None));
        assert_eq!(
            invites.redeem(1_000, Presented::TokenHash("t-b")),
            Err(ErrorCode::InviteExpired)
        );
        invites.insert(record("c", 5_000, None));
        invites.get_mut("c").unwrap().revoked = true;
        assert_eq!(
            invites.redeem(0, Presented::TokenHash("t-c")),
            Err(ErrorCode::InviteRevoked)
        );
        assert_eq!(invites.live(0).len(), 1, "only b is still usable at 0");
        assert!(invites.live(1_000).is_empty());
    }
}
