//! Owner commands: invites, devices, run state and throttle, the audit log. The caller has
//! already established that the request comes from the owner.

use shared_protocol::{close_code, display_code, ErrorCode, LogLevel, OwnerCommand, OwnerReply};

use crate::core::{short, Refusal, SwarmCore};
use crate::invites::view;
use crate::records::{InviteRecord, Session, StoreOp};
use crate::secrets::hash_secret;
use crate::{Millis, Output};

impl SwarmCore {
    pub(crate) fn owner_command(
        &mut self,
        now: Millis,
        command: OwnerCommand,
    ) -> Result<OwnerReply, Refusal> {
        match command {
            OwnerCommand::CreateInvite { ttl_ms, max_uses } => {
                self.create_invite(now, ttl_ms, max_uses)
            }
            OwnerCommand::ListInvites {} => Ok(OwnerReply::Invites {
                invites: self.invites.live(now),
            }),
            OwnerCommand::RevokeInvite { invite_id } => {
                let invite = self
                    .invites
                    .get_mut(&invite_id)
                    .ok_or_else(|| Refusal::new(ErrorCode::InviteInvalid, "no such invite"))?;
                invite.revoked = true;
                let record = invite.clone();
                self.persist(StoreOp::PutInvite(record));
                self.log(
                    now,
                    LogLevel::Info,
                    format!("invite {} revoked", short(&invite_id)),
                );
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::SetDeviceEnabled { device_id, enabled } => {
                let device = self.devices.get_mut(&device_id).ok_or_else(no_device)?;
                device.record.enabled = enabled;
                // Enabling a quarantined device is the owner vouching for it.
                device.record.quarantined &= !enabled;
                let record = device.record.clone();
                let verb = if enabled { "enabled" } else { "disabled" };
                self.log(
                    now,
                    LogLevel::Info,
                    format!("device '{}' {verb}", record.name),
                );
                self.persist(StoreOp::PutDevice(record));
                self.send_share(&device_id);
                self.capacity_changed(now);
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::RenameDevice { device_id, name } => {
                let device = self.devices.get_mut(&device_id).ok_or_else(no_device)?;
                let old = std::mem::replace(&mut device.record.name, name);
                device.record.named_by_owner = true;
                let record = device.record.clone();
                self.log(
                    now,
                    LogLevel::Info,
                    format!("device '{old}' renamed to '{}'", record.name),
                );
                self.persist(StoreOp::PutDevice(record));
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::RemoveDevice { device_id } => {
                let device = self.devices.remove(&device_id).ok_or_else(no_device)?;
                self.jobs.verifier.forget_device(&device_id);
                self.persist(StoreOp::DeleteDevice {
                    device_id: device_id.clone(),
                });
                self.log(
                    now,
                    LogLevel::Info,
                    format!("device '{}' removed", device.record.name),
                );
                if let Some(conn) = device.conn {
                    self.close(now, conn, close_code::REMOVED, "removed by the owner");
                }
                // A socket still attached to the removed device (e.g. mid-replacement) is closed too.
                let stale: Vec<_> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| matches!(&c.session, Session::Device { device_id: d, .. } if *d == device_id))
                    .map(|(conn, _)| *conn)
                    .collect();
                for conn in stale {
                    self.close(now, conn, close_code::REMOVED, "removed by the owner");
                }
                // Nothing measured of it is kept either.
                self.jobs.speeds.remove(&device_id);
                self.jobs.chunks_done.remove(&device_id);
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::SetRunState { state } => {
                let meta = self.meta.as_mut().ok_or_else(no_swarm)?;
                meta.run_state = state;
                let meta = meta.clone();
                self.log(
                    now,
                    LogLevel::Info,
                    format!(
                        "swarm {}",
                        shared_protocol::encode(&state).trim_matches('"')
                    ),
                );
                self.persist(StoreOp::PutSwarm(meta));
                self.send_shares();
                self.capacity_changed(now);
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::SetThrottle { percent } => {
                let meta = self.meta.as_mut().ok_or_else(no_swarm)?;
                meta.throttle_percent = percent;
                let meta = meta.clone();
                self.log(now, LogLevel::Info, format!("throttle set to {percent} %"));
                self.persist(StoreOp::PutSwarm(meta));
                self.send_shares();
                self.capacity_changed(now);
                Ok(OwnerReply::Done {})
            }
            OwnerCommand::SubmitJob { job } => Ok(self.submit_job(now, job)),
            OwnerCommand::CancelJob { job_id } => self.cancel_job(now, &job_id),
            OwnerCommand::AuditLog {} => Ok(OwnerReply::Audit {
                entries: self.audit.entries(),
            }),
        }
    }

    fn create_invite(
        &mut self,
        now: Millis,
        ttl_ms: Option<u64>,
        max_uses: Option<u32>,
    ) -> Result<OwnerReply, Refusal> {
        if let Err(retry) = self.invite_window.try_acquire(now) {
            let limit = self.config.invites_per_minute;
            return Err(Refusal::rate_limited(
                &format!("at most {limit} invites per minute"),
                retry,
            ));
        }
        let token = self.rng.secret();
        let code = self.rng.code();
        let record = InviteRecord {
            invite_id: self.rng.id(),
            token_hash: hash_secret(&token),
            code_hash: hash_secret(&code),
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms.unwrap_or(self.config.default_invite_ttl_ms)),
            max_uses,
            uses: 0,
            revoked: false,
        };
        let swarm_id = self
            .meta
            .as_ref()
            .map(|m| m.swarm_id.clone())
            .unwrap_or_default();
        self.emit(Output::RegisterCode {
            code_hash: record.code_hash.clone(),
            swarm_id,
            expires_ms: record.expires_ms,
        });
        self.persist(StoreOp::PutInvite(record.clone()));
        self.log(
            now,
            LogLevel::Info,
            format!("invite {} created", short(&record.invite_id)),
        );
        let invite = view(&record);
        self.invites.insert(record);
        Ok(OwnerReply::InviteCreated {
            invite,
            token,
            code: display_code(&code),
        })
    }
}

fn no_swarm() -> Refusal {
    Refusal::new(ErrorCode::SwarmNotFound, "no such swarm")
}

fn no_device() -> Refusal {
    Refusal::new(ErrorCode::DeviceNotFound, "no such device")
}
