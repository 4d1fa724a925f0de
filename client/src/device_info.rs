//! What a browser reports about itself, turned into protocol [`Capabilities`] and a default
//! device name. Pure functions over the raw values the glue reads from `navigator`.

use shared_protocol::{AgentClass, Capabilities};

/// Raw facts from `navigator`.
#[derive(Debug, Clone, Default)]
pub struct Navigator {
    pub user_agent: String,
    pub hardware_concurrency: f64,
    /// `navigator.deviceMemory` in GiB, where the browser reveals it.
    pub device_memory_gb: Option<f64>,
    pub has_webgpu: bool,
}

pub fn agent_class(user_agent: &str) -> AgentClass {
    let ua = user_agent.to_ascii_lowercase();
    if ["mobile", "android", "iphone", "ipad"]
        .iter()
        .any(|m| ua.contains(m))
    {
        AgentClass::BrowserMobile
    } else {
        AgentClass::BrowserDesktop
    }
}

pub fn capabilities(nav: &Navigator) -> Capabilities {
    let cores = if nav.hardware_concurrency.is_finite() {
        nav.hardware_concurrency as i64
    } else {
        1
    };
    Capabilities {
        cores: cores.clamp(1, 1024) as u16,
        memory_mb: nav
            .device_memory_gb
            .filter(|gb| gb.is_finite() && *gb > 0.0)
            .map(|gb| (gb * 1024.0).round().clamp(1.0, 16_777_216.0) as u32),
        gpu: nav.has_webgpu,
        agent: agent_class(&nav.user_agent),
        // Every browser that runs module workers runs WebAssembly (pages/worker.js).
        workloads: true,
    }
}

/// A readable default name such as "Chrome on Android".
pub fn default_name(user_agent: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ]
    .iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map_or("Browser", |(_, name)| name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map_or("a device", |(_, name)| name);
    format!("{browser} on {os}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";
    const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";

    #[test]
    fn classes_and_names_from_user_agents() {
        assert_eq!(agent_class(ANDROID), AgentClass::BrowserMobile);
        assert_eq!(agent_class(DESKTOP), AgentClass::BrowserDesktop);
        assert_eq!(default_name(ANDROID), "Chrome on Android");
        assert_eq!(default_name(DESKTOP), "Chrome on Linux");
        assert_eq!(default_name(""), "Browser on a device");
    }

    #[test]
    fn capabilities_are_clamped_into_protocol_ranges() {
        let nav = Navigator {
            user_agent: DESKTOP.into(),
            hardware_concurrency: 0.0,
            device_memory_gb: Some(0.5),
            has_webgpu: true,
        };
        let caps = capabilities(&nav);
        assert_eq!((caps.cores, caps.memory_mb, caps.gpu), (1, Some(512), true));
        let nav = Navigator {
            hardware_concurrency: f64::NAN,
            device_memory_gb: Some(f64::INFINITY),
            ..nav
        };
        assert_eq!(
            (capabilities(&nav).cores, capabilities(&nav).memory_mb),
            (1, None)
        );
        let nav = Navigator {
            hardware_concurrency: 5000.0,
            device_memory_gb: None,
            ..nav
        };
        assert_eq!(capabilities(&nav).cores, 1024);
    }
}
