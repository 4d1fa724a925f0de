//! The command line: `ostrich-agent <link> [--cores N] [--name NAME] [--state FILE]
//! [--owner-key KEY] [--coordinator URL] [--ca-file PEM]`, parsed by a pure function so that
//! it is tested without a process.

use std::path::PathBuf;

/// The usage text printed by `--help` and after a bad command line.
pub const USAGE: &str = "\
usage: ostrich-agent <invite link> [options]

Joins an Ostrich Legs swarm and computes its work on this machine's cores.

  <invite link>        http(s)://host/join/<swarm_id>#t=<token> (or #c=<code>),
                       or http(s)://host/s/<swarm_id> together with --owner-key
options:
  --cores N            worker threads to lend (default: all logical cores)
  --name NAME          the device name shown on the dashboard (default: agent on <host>)
  --state FILE         where the device credential is kept
                       (default: ./ostrich-agent-<swarm_id>.json)
  --owner-key KEY      join as the owner's own device instead of with an invite
  --coordinator URL    the coordinator's origin, when it differs from the link's
  --ca-file PEM        also trust these root certificates for https/wss
                       (beside the built-in Mozilla roots), e.g. a private CA
  -h, --help           this text

Once the state file holds a credential, the agent resumes that device and needs no invite.";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The invite (or owner dashboard) link.
    pub link: String,
    /// Worker threads; `None` means every logical core.
    pub cores: Option<u16>,
    /// The device name; `None` means the default one.
    pub name: Option<String>,
    /// The state file; `None` means the default path for the swarm.
    pub state: Option<PathBuf>,
    /// The owner key, as the join proof instead of the link's invite.
    pub owner_key: Option<String>,
    /// The coordinator's origin (`http(s)://host[:port]`), when not the link's.
    pub coordinator: Option<String>,
    /// Extra trusted root certificates (PEM) for TLS.
    pub ca_file: Option<PathBuf>,
}

/// What the process should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Args),
    Help,
}

/// Parses the arguments after the program name. Options take their value as the next
/// argument or after `=` (`--cores 4`, `--cores=4`).
pub fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut link = None;
    let mut cores = None;
    let mut name = None;
    let mut state = None;
    let mut owner_key = None;
    let mut coordinator = None;
    let mut ca_file = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if !arg.starts_with("--") {
            if link.replace(arg.clone()).is_some() {
                return Err(format!("unexpected extra argument '{arg}'"));
            }
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--cores" => {
                let text = value()?;
                let n: u16 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("--cores wants a number, got '{text}'"))?;
                if !(1..=1024).contains(&n) {
                    return Err(format!("--cores must be 1 to 1024, got {n}"));
                }
                cores = Some(n);
            }
            "--name" => {
                let text = value()?;
                let trimmed = text.trim();
                if trimmed.is_empty()
                    || trimmed.chars().count() > 64
                    || trimmed.chars().any(char::is_control)
                {
                    return Err(
                        "--name must be 1 to 64 characters without control characters".into(),
                    );
                }
                name = Some(trimmed.to_owned());
            }
            "--state" => state = Some(PathBuf::from(value()?)),
            "--owner-key" => owner_key = Some(value()?),
            "--coordinator" => coordinator = Some(value()?),
            "--ca-file" => ca_file = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown option '{flag}'")),
        }
    }
    let link = link.ok_or("the invite link is missing")?;
    Ok(Command::Run(Args {
        link,
        cores,
        name,
        state,
        owner_key,
        coordinator,
        ca_file,
    }))
}

/// The device name when none is given: `agent on <hostname>`, within the 64-character limit.
pub fn default_name(hostname: Option<&str>) -> String {
    let host = hostname
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.chars().any(char::is_control))
        .unwrap_or("this machine");
    format!("agent on {host}").chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Args {
        match parse(args.iter().copied()) {
            Ok(Command::Run(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_link_alone_is_enough() {
        let args = run(&["http://h/join/x#t=y"]);
        assert_eq!(args.link, "http://h/join/x#t=y");
        assert_eq!(
            (args.cores, args.name, args.state, args.owner_key),
            (None, None, None, None)
        );
    }

    #[test]
    fn options_take_separate_or_inline_values() {
        let args = run(&[
            "--cores",
            "2",
            "link",
            "--name=My box",
            "--state",
            "/tmp/s.json",
            "--owner-key",
            "k",
            "--coordinator=http://c:1",
            "--ca-file",
            "ca.pem",
        ]);
        assert_eq!(args.link, "link");
        assert_eq!(args.cores, Some(2));
        assert_eq!(args.name.as_deref(), Some("My box"));
        assert_eq!(args.state, Some(PathBuf::from("/tmp/s.json")));
        assert_eq!(args.owner_key.as_deref(), Some("k"));
        assert_eq!(args.coordinator.as_deref(), Some("http://c:1"));
        assert_eq!(args.ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            &[][..],
            &["--cores"],
            &["l", "--cores", "0"],
            &["l", "--cores", "many"],
            &["l", "--cores", "5000"],
            &["l", "--name", "  "],
            &["l", "--frobnicate"],
            &["l", "m"],
        ] {
            assert!(parse(bad.iter().copied()).is_err(), "{bad:?}");
        }
        assert_eq!(parse(["x", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn the_default_name_names_the_host() {
        assert_eq!(default_name(Some("lab-7\n")), "agent on lab-7");
        assert_eq!(default_name(None), "agent on this machine");
        assert_eq!(default_name(Some("")), "agent on this machine");
        assert_eq!(default_name(Some(&"h".repeat(100))).chars().count(), 64);
    }
}
