//! The agent's state file: the device credential from its first welcome, so that later starts
//! resume the same device without an invite. The file holds a secret, so it is written
//! readable by its owner only (on Unix) and replaced atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shared_protocol::DeviceCredential;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub swarm_id: String,
    pub credential: DeviceCredential,
}

/// `./ostrich-agent-<swarm_id>.json`.
pub fn default_path(swarm_id: &str) -> PathBuf {
    PathBuf::from(format!("ostrich-agent-{swarm_id}.json"))
}

/// Reads the state text; a credential for another swarm is an error rather than silently
/// ignored, since it means the wrong file was given.
pub fn from_json(text: &str, swarm_id: &str) -> Result<DeviceCredential> {
    let state: State = serde_json::from_str(text).context("not an agent state file")?;
    if state.swarm_id != swarm_id {
        bail!(
            "it belongs to swarm {}, not {swarm_id}; give another --state file",
            state.swarm_id
        );
    }
    Ok(state.credential)
}

pub fn to_json(swarm_id: &str, credential: &DeviceCredential) -> String {
    let state = State {
        swarm_id: swarm_id.to_owned(),
        credential: credential.clone(),
    };
    serde_json::to_string_pretty(&state).expect("the state always serialises") + "\n"
}

/// The saved credential, or `None` when there is no state file yet.
pub fn load(path: &Path, swarm_id: &str) -> Result<Option<DeviceCredential>> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_json(&text, swarm_id)
            .map(Some)
            .with_context(|| format!("reading the state file {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading the state file {}", path.display())),
    }
}

/// Writes the credential: to a temporary file beside `path`, then renamed over it.
pub fn save(path: &Path, swarm_id: &str, credential: &DeviceCredential) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(to_json(swarm_id, credential).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing the state file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWARM: &str = "0123456789abcdef0123456789abcdef";

    fn cred() -> DeviceCredential {
        DeviceCredential {
            device_id: "d".repeat(32),
            secret: "s".repeat(43),
        }
    }

    #[test]
    fn the_credential_round_trips_for_its_swarm_only() {
        let text = to_json(SWARM, &cred());
        assert_eq!(from_json(&text, SWARM).unwrap(), cred());
        assert!(from_json(&text, &"f".repeat(32)).is_err());
        assert!(from_json("{}", SWARM).is_err());
        assert!(from_json("not json", SWARM).is_err());
    }

    #[test]
    fn a_missing_file_is_no_credential_and_a_saved_one_is_read_back() {
        let dir = std::env::temp_dir().join(format!("ostrich-agent-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(load(&path, SWARM).unwrap(), None);
        save(&path, SWARM, &cred()).unwrap();
        assert_eq!(load(&path, SWARM).unwrap(), Some(cred()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the secret is readable by others");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_default_path_names_the_swarm() {
        assert_eq!(
            default_path(SWARM),
            PathBuf::from(format!("ostrich-agent-{SWARM}.json"))
        );
    }
}
