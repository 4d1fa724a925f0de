//! Leptos views: the landing page, the dashboard and the device page. Components only render
//! signals and forward clicks; connection logic is in [`crate::link`], browser access in
//! [`crate::browser`]. Stable `data-testid` attributes are the browser tests' hooks.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_protocol::{
    CreateSwarmRequest, CreateSwarmResponse, DeviceCredential, DeviceStatus, HttpError, LogLevel,
    SwarmSnapshot,
};
use wasm_bindgen::prelude::wasm_bindgen;

use crate::browser::{self, coordinator_origin, drive, now_ms, ws_url};
use crate::device_info;
use crate::format;
use crate::link::{Identity, Link, LinkEvent, LinkState};
use crate::route::{keys, Route};

/// Entry point: mounts the app when loaded in a window (not in a worker).
#[wasm_bindgen(start)]
pub fn start() {
    if web_sys::window().is_some() {
        leptos::mount::mount_to_body(App);
    }
}

#[component]
fn App() -> impl IntoView {
    let page = match Route::parse(&browser::location_path()) {
        Route::Landing => view! { <Landing/> }.into_any(),
        Route::Dashboard { swarm_id } => view! { <Dashboard swarm_id/> }.into_any(),
        Route::Device { swarm_id } => view! { <DevicePage swarm_id/> }.into_any(),
        Route::NotFound => view! {
            <section class="card"><h2>"Page not found"</h2><p><a href="/">"Start page"</a></p></section>
        }
        .into_any(),
    };
    view! {
        <header class="top"><a href="/" class="brand">"Ostrich Legs"</a></header>
        <main>{page}</main>
    }
}

/// Creates a swarm and opens its dashboard.
#[component]
fn Landing() -> impl IntoView {
    let (name, set_name) = signal(String::from("My swarm"));
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        set_busy.set(true);
        set_error.set(None);
        let body = CreateSwarmRequest {
            name: name.get_untracked().trim().to_owned(),
        };
        spawn_local(async move {
            match create_swarm(body).await {
                Ok(created) => {
                    browser::storage_set(&keys::owner_key(&created.swarm_id), &created.owner_key);
                    browser::navigate(&Route::dashboard_path(&created.swarm_id));
                }
                Err(message) => {
                    set_error.set(Some(message));
                    set_busy.set(false);
                }
            }
        });
    };
    view! {
        <section class="card">
            <h1>"Turn every browser into a compute swarm"</h1>
            <p>"Create a swarm, open its join link on phones and laptops, and watch them compute."</p>
            <form on:submit=create>
                <label for="swarm-name">"Swarm name"</label>
                <input id="swarm-name" data-testid="swarm-name" maxlength="64"
                    prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev))/>
                <button type="submit" data-testid="create-swarm" disabled=busy>"Create swarm"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error" data-testid="error">{e}</p> })}
        </section>
    }
}

/// Whether the swarm exists: `Ok(false)` only on a definite 404, so that an unreachable
/// coordinator still leads to the reconnect loop rather than a false "no such swarm".
async fn swarm_exists(origin: &str, swarm_id: &str) -> bool {
    match gloo_net::http::Request::get(&format!("{origin}/api/swarms/{swarm_id}"))
        .send()
        .await
    {
        Ok(resp) => resp.status() != 404,
        Err(_) => true,
    }
}

/// Shown instead of a page whose swarm does not exist.
#[component]
fn SwarmMissing() -> impl IntoView {
    view! {
        <section class="card" data-testid="swarm-missing">
            <h2>"This swarm does not exist"</h2>
            <p>"The link may be mistyped, or the swarm was never created. "<a href="/">"Create a swarm"</a></p>
        </section>
    }
}

async fn create_swarm(body: CreateSwarmRequest) -> Result<CreateSwarmResponse, String> {
    let origin = coordinator_origin().await;
    let request = gloo_net::http::Request::post(&format!("{origin}/api/swarms"))
        .json(&body)
        .map_err(|e| e.to_string())?;
    let resp = request
        .send()
        .await
        .map_err(|e| format!("the coordinator is unreachable: {e}"))?;
    if resp.ok() {
        resp.json().await.map_err(|e| e.to_string())
    } else {
        Err(resp
            .json::<HttpError>()
            .await
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("HTTP {}", resp.status())))
    }
}

/// Live view of a swarm: devices, counters and log, from the 2 s snapshots.
#[component]
fn Dashboard(swarm_id: String) -> impl IntoView {
    let owner_key = browser::storage_get(&keys::owner_key(&swarm_id));
    let snapshot = RwSignal::new(None::<SwarmSnapshot>);
    let state = RwSignal::new(LinkState::Connecting { attempt: 0 });
    let owner = RwSignal::new(false);
    let missing = RwSignal::new(false);
    let link = Link::new(Identity::Dashboard { owner_key });
    let id = swarm_id.clone();
    spawn_local(async move {
        let origin = coordinator_origin().await;
        if !swarm_exists(&origin, &id).await {
            return missing.set(true);
        }
        let url = ws_url(&origin, &id);
        drive(link, url, move |link, event| {
            state.set(link.state().clone());
            match event {
                Some(LinkEvent::Snapshot(snap)) => snapshot.set(Some(*snap)),
                Some(LinkEvent::Welcomed {
                    owner: is_owner, ..
                }) => owner.set(is_owner),
                _ => {}
            }
        })
        .await;
    });
    let join_url = format!(
        "{}{}",
        web_sys::window()
            .and_then(|w| w.location().origin().ok())
            .unwrap_or_default(),
        Route::device_path(&swarm_id)
    );
    let devices = move || snapshot.get().map(|s| s.devices).unwrap_or_default();
    let log_entries = move || {
        snapshot
            .get()
            .map(|s| s.log)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
    };
    view! {
        <Show when=move || missing.get()><SwarmMissing/></Show>
        <section class="card" class:hidden=move || missing.get()>
            <h1 data-testid="swarm-title">{move || snapshot.get().map(|s| s.swarm_name).unwrap_or_else(|| "Swarm".into())}</h1>
            <p class="muted">
                <span data-testid="link-state">{move || format::link_state(&state.get(), now_ms())}</span>
                {move || owner.get().then(|| view! { <span class="badge">"owner"</span> })}
            </p>
            <div class="stats">
                <div><b data-testid="online-count">{move || snapshot.get().map_or(0, |s| s.online)}</b>" online"</div>
                <div><b data-testid="device-count">{move || snapshot.get().map_or(0, |s| s.device_total)}</b>" devices"</div>
            </div>
            <p>"Join link for devices: "<a data-testid="join-link" href=join_url.clone() target="_blank">{join_url.clone()}</a></p>
        </section>
        <section class="card" class:hidden=move || missing.get()>
            <h2>"Devices"</h2>
            <div class="table-wrap">
            <table data-testid="devices">
                <thead><tr><th>"Name"</th><th>"Status"</th><th>"Cores"</th><th>"Memory"</th><th>"GPU"</th><th>"Last seen"</th></tr></thead>
                <tbody>
                    <For each=devices key=|d| (d.id.clone(), d.status, d.last_seen_ms) children=move |d| {
                        let now = snapshot.get_untracked().map_or(0, |s| s.now_ms);
                        let online = d.status == DeviceStatus::Online;
                        view! {
                            <tr data-testid="device-row" data-device-id=d.id.clone()>
                                <td>{d.name.clone()}</td>
                                <td><span class=if online { "status online" } else { "status offline" } data-testid="device-status">
                                    {if online { "ONLINE" } else { "OFFLINE" }}</span></td>
                                <td>{d.capabilities.cores}</td>
                                <td>{format::memory(d.capabilities.memory_mb)}</td>
                                <td>{if d.capabilities.gpu { "yes" } else { "—" }}</td>
                                <td>{format::ago(now, d.last_seen_ms)}</td>
                            </tr>
                        }
                    }/>
                </tbody>
            </table>
            </div>
        </section>
        <section class="card" class:hidden=move || missing.get()>
            <h2>"System log"</h2>
            <ol class="log" data-testid="log">
                <For each=log_entries key=|e| (e.at_ms, e.text.clone()) children=|e| {
                        let class = match e.level { LogLevel::Info => "info", LogLevel::Warn => "warn", LogLevel::Security => "security" };
                        view! { <li class=class>{e.text}</li> }
                    }/>
            </ol>
        </section>
    }
}

/// This browser as a device of the swarm.
#[component]
fn DevicePage(swarm_id: String) -> impl IntoView {
    let nav = browser::navigator();
    let capabilities = device_info::capabilities(&nav);
    let name = browser::storage_get(keys::DEVICE_NAME)
        .unwrap_or_else(|| device_info::default_name(&nav.user_agent));
    let credential_key = keys::device_credential(&swarm_id);
    let credential: Option<DeviceCredential> =
        browser::storage_get(&credential_key).and_then(|text| serde_json::from_str(&text).ok());
    let state = RwSignal::new(LinkState::Connecting { attempt: 0 });
    let device_id = RwSignal::new(credential.as_ref().map(|c| c.device_id.clone()));
    let swarm_name = RwSignal::new(String::new());
    let rtt = RwSignal::new(None::<u64>);
    let missing = RwSignal::new(false);
    let cores = capabilities.cores;
    let identity = Identity::Device {
        name: name.clone(),
        capabilities,
        credential,
    };

    let start = move |identity: Identity, swarm_id: String, credential_key: String| {
        spawn_local(async move {
            let origin = coordinator_origin().await;
            if !swarm_exists(&origin, &swarm_id).await {
                return missing.set(true);
            }
            let url = ws_url(&origin, &swarm_id);
            drive(Link::new(identity), url, move |link, event| {
                state.set(link.state().clone());
                match event {
                    Some(LinkEvent::Welcomed {
                        swarm_name: n,
                        device_id: id,
                        new_credential,
                        ..
                    }) => {
                        swarm_name.set(n);
                        device_id.set(id);
                        if let Some(credential) = new_credential {
                            if let Ok(text) = serde_json::to_string(&credential) {
                                browser::storage_set(&credential_key, &text);
                            }
                        }
                    }
                    Some(LinkEvent::Ack { rtt_ms }) => rtt.set(Some(rtt_ms)),
                    _ => {}
                }
            })
            .await;
        });
    };
    start(identity.clone(), swarm_id.clone(), credential_key.clone());

    let restart_identity = identity.clone();
    let register_again = move |_| {
        browser::storage_remove(&credential_key);
        let mut fresh = restart_identity.clone();
        if let Identity::Device { credential, .. } = &mut fresh {
            *credential = None;
        }
        device_id.set(None);
        start(fresh, swarm_id.clone(), credential_key.clone());
    };
    let refused = move || matches!(state.get(), LinkState::Refused { .. });
    view! {
        <Show when=move || missing.get()><SwarmMissing/></Show>
        <section class="card" class:hidden=move || missing.get()>
            <h1>"This device"</h1>
            <p class="muted">{move || if swarm_name.get().is_empty() { String::new() } else { format!("in swarm “{}”", swarm_name.get()) }}</p>
            <dl class="facts">
                <dt>"Status"</dt><dd data-testid="device-state">{move || format::link_state(&state.get(), now_ms())}</dd>
                <dt>"Name"</dt><dd data-testid="device-name">{name}</dd>
                <dt>"Device id"</dt><dd data-testid="device-id">{move || device_id.get().unwrap_or_else(|| "—".into())}</dd>
                <dt>"Cores"</dt><dd>{cores}</dd>
                <dt>"Round trip"</dt><dd>{move || rtt.get().map_or("—".into(), |ms| format!("{ms} ms"))}</dd>
            </dl>
            <Show when=refused>
                <button data-testid="register-again" on:click=register_again.clone()>"Register as a new device"</button>
            </Show>
        </section>
    }
}
