//! Leptos views: the landing page, the dashboard (with the owner's controls and invite panel)
//! and the device page. Components only render signals and forward clicks; connection logic is
//! in [`crate::link`], browser access in [`crate::browser`]. Stable `data-testid` attributes are
//! the browser tests' hooks.

use leptos::prelude::*;
use leptos::task::spawn_local;
use shared_protocol::{
    normalize_code, CreateSwarmRequest, CreateSwarmResponse, DeviceCredential, DeviceStatus,
    DeviceView, ErrorCode, HttpError, InviteView, JobSpec, JobState, JoinProof, LogLevel,
    OwnerCommand, OwnerReply, ResolveCodeRequest, ResolveCodeResponse, RunState, SwarmSnapshot,
};

use crate::browser::{self, coordinator_origin, drive, now_ms, ws_url};
use crate::device_info;
use crate::format;
use crate::link::{Identity, Link, LinkEvent, LinkState};
use crate::qr::qr_svg;
use crate::route::{self, keys, Route};

/// The dashboard bundle's app: the landing page and the dashboard (owner's or viewer's).
/// `client-dashboard` mounts it; the device page is not linked in, so this bundle carries none
/// of it.
#[component]
pub fn DashboardApp() -> impl IntoView {
    let page = match Route::parse(&browser::location_path()) {
        Route::Landing => view! { <Landing/> }.into_any(),
        // The dashboard's tables and charts use the width of a laptop screen.
        Route::Dashboard { swarm_id } => {
            return view! { <Frame wide=true><Dashboard swarm_id/></Frame> }.into_any()
        }
        _ => view! { <PageNotFound/> }.into_any(),
    };
    view! { <Frame>{page}</Frame> }.into_any()
}

/// The device bundle's app: joining through an invite and the device page. `client-device`
/// mounts it; a phone opening an invite loads none of the dashboard.
#[component]
pub fn DeviceApp() -> impl IntoView {
    let page = match Route::parse(&browser::location_path()) {
        Route::Device { swarm_id } => view! { <DevicePage swarm_id proof=None/> }.into_any(),
        Route::Join { swarm_id } => {
            let proof = route::join_proof(&browser::location_hash());
            view! { <DevicePage swarm_id proof/> }.into_any()
        }
        _ => view! { <PageNotFound/> }.into_any(),
    };
    view! { <Frame>{page}</Frame> }
}

#[component]
fn Frame(children: Children, #[prop(optional)] wide: bool) -> impl IntoView {
    view! {
        <header class="top"><a href="/" class="brand">"Ostrich Legs"</a></header>
        <main class:wide=wide>{children()}</main>
    }
}

#[component]
fn PageNotFound() -> impl IntoView {
    view! {
        <section class="card"><h2>"Page not found"</h2><p><a href="/">"Start page"</a></p></section>
    }
}

// ---------- HTTP calls ----------

async fn read_error(resp: gloo_net::http::Response) -> String {
    match resp.json::<HttpError>().await {
        Ok(err) => format::error_sentence(err.code, &err.message),
        Err(_) => format!("HTTP {}", resp.status()),
    }
}

async fn post_json<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    url: &str,
    bearer: Option<&str>,
    body: &B,
) -> Result<R, String> {
    let mut request = gloo_net::http::Request::post(url);
    if let Some(key) = bearer {
        request = request.header("authorization", &format!("Bearer {key}"));
    }
    let resp = request
        .json(body)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("the coordinator is unreachable: {e}"))?;
    if resp.ok() {
        resp.json().await.map_err(|e| e.to_string())
    } else {
        Err(read_error(resp).await)
    }
}

async fn owner_call(
    swarm_id: &str,
    owner_key: &str,
    command: OwnerCommand,
) -> Result<OwnerReply, String> {
    let origin = coordinator_origin().await;
    post_json(
        &format!("{origin}/api/swarms/{swarm_id}/owner"),
        Some(owner_key),
        &command,
    )
    .await
}

/// Whether the swarm exists: `false` only on a definite 404, so that an unreachable
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

// ---------- landing ----------

/// Creates a swarm, or joins one with a short code.
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
            let origin = coordinator_origin().await;
            match post_json::<_, CreateSwarmResponse>(&format!("{origin}/api/swarms"), None, &body)
                .await
            {
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
    let (code, set_code) = signal(String::new());
    let (code_error, set_code_error) = signal(None::<String>);
    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        set_code_error.set(None);
        let Some(canonical) = normalize_code(&code.get_untracked()) else {
            set_code_error.set(Some(
                "An invite code has 10 letters and digits, like ABCDE-12345.".into(),
            ));
            return;
        };
        spawn_local(async move {
            let origin = coordinator_origin().await;
            let body = ResolveCodeRequest {
                code: canonical.clone(),
            };
            match post_json::<_, ResolveCodeResponse>(&format!("{origin}/api/join"), None, &body)
                .await
            {
                Ok(found) => browser::navigate(&route::code_join_path(&found.swarm_id, &canonical)),
                Err(message) => set_code_error.set(Some(message)),
            }
        });
    };
    view! {
        <section class="card">
            <h1>"Turn every browser into a compute swarm"</h1>
            <p>"Create a swarm, invite phones and laptops with a QR code, link or short code, and watch them compute."</p>
            <form on:submit=create>
                <label for="swarm-name">"Swarm name"</label>
                <input id="swarm-name" data-testid="swarm-name" maxlength="64"
                    prop:value=name on:input=move |ev| set_name.set(event_target_value(&ev))/>
                <button type="submit" data-testid="create-swarm" disabled=busy>"Create swarm"</button>
            </form>
            {move || error.get().map(|e| view! { <p class="error" data-testid="error">{e}</p> })}
        </section>
        <section class="card">
            <h2>"Have an invite code?"</h2>
            <form on:submit=join>
                <input data-testid="join-code" placeholder="ABCDE-12345" maxlength="32" autocomplete="off"
                    prop:value=code on:input=move |ev| set_code.set(event_target_value(&ev))/>
                <button type="submit" data-testid="join-with-code">"Join"</button>
            </form>
            {move || code_error.get().map(|e| view! { <p class="error" data-testid="code-error">{e}</p> })}
        </section>
    }
}

// ---------- parts loaded after first paint ----------

/// The dashboard bundle's parts that are not needed for its first paint. With the `split`
/// feature (a release build of the dashboard bundle, see `xtask/src/build.rs`) each is a wasm
/// module of its own that the page fetches when the part is first shown; otherwise they are
/// plain async functions. Each is shown through `Suspend`, so the page around it renders at
/// once.
#[allow(unsafe_code)] // only in what `#[lazy]` generates
mod parts {
    use leptos::prelude::*;
    use shared_protocol::SwarmSnapshot;

    use super::{JobsPanel, OwnerPanel, VelocityPanel};

    #[cfg_attr(feature = "split", leptos::lazy)]
    pub async fn velocity(
        velocity: RwSignal<crate::chart::Velocity>,
        hidden: RwSignal<bool>,
    ) -> AnyView {
        view! { <VelocityPanel velocity hidden/> }.into_any()
    }

    #[cfg_attr(feature = "split", leptos::lazy)]
    pub async fn jobs(
        swarm_id: String,
        owner_key: String,
        owner: RwSignal<bool>,
        snapshot: RwSignal<Option<SwarmSnapshot>>,
        hidden: RwSignal<bool>,
    ) -> AnyView {
        view! { <JobsPanel swarm_id owner_key owner snapshot hidden/> }.into_any()
    }

    #[cfg_attr(feature = "split", leptos::lazy)]
    pub async fn owner_panel(
        swarm_id: String,
        owner_key: String,
        snapshot: RwSignal<Option<SwarmSnapshot>>,
    ) -> AnyView {
        view! { <OwnerPanel swarm_id owner_key snapshot/> }.into_any()
    }
}

// ---------- dashboard ----------

/// Live view of a swarm from the 2 s snapshots; with the owner key, also the owner's controls.
#[component]
fn Dashboard(swarm_id: String) -> impl IntoView {
    let storage_key = keys::owner_key(&swarm_id);
    // An owner link (`#owner=`) hands this browser the key; drop it from the address bar.
    if let Some(key) = route::owner_key(&browser::location_hash()) {
        browser::storage_set(&storage_key, &key);
        browser::replace_url(&Route::dashboard_path(&swarm_id));
    }
    let owner_key = browser::storage_get(&storage_key);
    let snapshot = RwSignal::new(None::<SwarmSnapshot>);
    let velocity = RwSignal::new(crate::chart::Velocity::default());
    let state = RwSignal::new(LinkState::Connecting { attempt: 0 });
    let owner = RwSignal::new(false);
    let missing = RwSignal::new(false);
    let link = Link::new(Identity::Dashboard {
        owner_key: owner_key.clone(),
    });
    let id = swarm_id.clone();
    spawn_local(async move {
        let origin = coordinator_origin().await;
        if !swarm_exists(&origin, &id).await {
            return missing.set(true);
        }
        // A dashboard skips a lease's work unread, and computes nothing.
        drive::<SwarmSnapshot, serde::de::IgnoredAny, browser::NoCompute>(
            link,
            ws_url(&origin, &id),
            None,
            None,
            move |link, event| {
                state.set(link.state().clone());
                match event {
                    Some(LinkEvent::Snapshot(snap)) => {
                        velocity.update(|v| v.observe(&snap));
                        snapshot.set(Some(*snap));
                    }
                    Some(LinkEvent::SnapshotDelta(delta)) => {
                        snapshot.update(|held| {
                            let Some(held) = held else { return };
                            match held.apply(*delta) {
                                Ok(()) => velocity.update(|v| v.observe(held)),
                                Err(gap) => leptos::logging::warn!(
                                    "a snapshot delta did not follow the snapshot held: {gap:?}"
                                ),
                            }
                        });
                    }
                    Some(LinkEvent::Welcomed {
                        owner: is_owner, ..
                    }) => owner.set(is_owner),
                    _ => {}
                }
            },
        )
        .await;
    });
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
    let key_for_rows = owner_key.clone().unwrap_or_default();
    let owner_key_for_jobs = owner_key.clone().unwrap_or_default();
    let id_for_rows = swarm_id.clone();
    let owner_panel = owner_key.map(|key| {
        let swarm_id = swarm_id.clone();
        view! { <Show when=move || owner.get()>{Suspend::new(parts::owner_panel(swarm_id.clone(), key.clone(), snapshot))}</Show> }
    });
    view! {
        <Show when=move || missing.get()><SwarmMissing/></Show>
        <section class="card" class:hidden=move || missing.get()>
            <h1 data-testid="swarm-title">{move || snapshot.get().map(|s| s.swarm_name).unwrap_or_else(|| "Swarm".into())}</h1>
            <p class="muted" role="status" aria-live="polite">
                <span data-testid="link-state">{move || format::link_state(&state.get(), now_ms())}</span>
                {move || owner.get().then(|| view! { <span class="badge" data-testid="owner-badge">"owner"</span> })}
            </p>
            <div class="stats" role="status" aria-live="polite">
                <div><b data-testid="online-count">{move || snapshot.get().map_or(0, |s| s.online)}</b>" online"</div>
                <div><b data-testid="device-count">{move || snapshot.get().map_or(0, |s| s.device_total)}</b>" devices"</div>
                <div><b data-testid="run-state">{move || snapshot.get().map_or(String::new(), |s| run_state_text(s.run_state).into())}</b></div>
            </div>
        </section>
        {Suspend::new(parts::velocity(velocity, missing))}
        {Suspend::new(parts::jobs(swarm_id.clone(), owner_key_for_jobs, owner, snapshot, missing))}
        {owner_panel}
        <section class="card" class:hidden=move || missing.get()>
            <h2>"Devices"</h2>
            // Focusable, so that a keyboard can scroll a table wider than the screen.
            <div class="table-wrap" tabindex="0" role="region" aria-label="Devices">
            <table class="cards" data-testid="devices">
                <thead><tr><th>"Name"</th><th>"Status"</th><th>"Hardware"</th><th>"Speed"</th><th>"Share"</th><th>"In flight"</th><th>"Done"</th><th>"Trust"</th><th><span class="visually-hidden">"Actions"</span></th></tr></thead>
                <tbody>
                    <For each=devices key=|d| d.id.clone() children=move |d| {
                        view! { <DeviceRow device=d snapshot velocity owner=owner swarm_id=id_for_rows.clone() owner_key=key_for_rows.clone()/> }
                    }/>
                </tbody>
            </table>
            </div>
        </section>
        <section class="card" class:hidden=move || missing.get()>
            <h2>"System log"</h2>
            <ol class="log" data-testid="log" tabindex="0" aria-label="System log">
                <For each=log_entries key=|e| (e.at_ms, e.text.clone()) children=|e| {
                    let class = match e.level { LogLevel::Info => "info", LogLevel::Warn => "warn", LogLevel::Security => "security" };
                    view! { <li class=class><time>{browser::clock(e.at_ms)}</time>" "{e.text}</li> }
                }/>
            </ol>
        </section>
    }
}

/// The swarm's throughput over the last ten minutes, drawn from the snapshots it already
/// receives (see [`crate::chart`]): work units per second for each kind of job that ran, and
/// chunks per second.
#[component]
fn VelocityPanel(
    velocity: RwSignal<crate::chart::Velocity>,
    hidden: RwSignal<bool>,
) -> impl IntoView {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 60.0;
    let charts = move || velocity.with(|v| v.charts(WIDTH, HEIGHT));
    view! {
        <section class="card" class:hidden=move || hidden.get() data-testid="velocity">
            <h2>"Throughput, last 10 minutes"</h2>
            {move || charts().into_iter().map(|crate::chart::Chart { name, now, line }| view! {
                <figure class="chart" data-testid="chart" data-kind=name.clone()>
                    <figcaption><b>{name.clone()}</b>" "<span data-testid="chart-now">{now.clone()}</span></figcaption>
                    <svg viewBox=format!("0 0 {} {}", WIDTH as u32, HEIGHT as u32) preserveAspectRatio="none" role="img"
                        aria-label=format!("{name}: {now} now, over the last 10 minutes")>
                        <polyline fill="none" stroke="currentColor" stroke-width="2" vector-effect="non-scaling-stroke" points=line/>
                    </svg>
                </figure>
            }).collect_view()}
        </section>
    }
}

/// Jobs with progress, rate, ETA and results; the owner also gets the job form and Cancel.
#[component]
fn JobsPanel(
    swarm_id: String,
    owner_key: String,
    owner: RwSignal<bool>,
    snapshot: RwSignal<Option<SwarmSnapshot>>,
    hidden: RwSignal<bool>,
) -> impl IntoView {
    // Result links go to the coordinator, which is not the page's origin under Pages.
    let coordinator = RwSignal::new(String::new());
    spawn_local(async move { coordinator.set(coordinator_origin().await) });
    let kind = RwSignal::new(String::from("prime_count"));
    // Typed values by field name; a field not typed in shows its kind's default.
    let values = RwSignal::new(std::collections::BTreeMap::<String, String>::new());
    let value_of = move |name: &str| {
        values.with(|v| v.get(name).cloned()).unwrap_or_else(|| {
            crate::jobs::fields(&kind.get_untracked())
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, d)| (*d).to_owned())
                .unwrap_or_default()
        })
    };
    let error = RwSignal::new(None::<String>);
    // What happened to the last submission, at once: "Submitting…", then "Job … submitted".
    let submitted = RwSignal::new(None::<String>);
    let submit = {
        let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            error.set(None);
            let job = match crate::jobs::parse(&kind.get_untracked(), value_of) {
                Ok(job) => job,
                Err(message) => return error.set(Some(message)),
            };
            submitted.set(Some("Submitting…".to_owned()));
            let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
            spawn_local(async move {
                let command = OwnerCommand::SubmitJob { job };
                match owner_call(&swarm_id, &owner_key, command).await {
                    Ok(OwnerReply::JobSubmitted { job_id }) => submitted.set(Some(format!(
                        "Job {} submitted: it appears below with the next update.",
                        job_id.get(..8).unwrap_or(&job_id)
                    ))),
                    Ok(_) => submitted.set(None),
                    Err(message) => {
                        submitted.set(None);
                        error.set(Some(message));
                    }
                }
            });
        }
    };
    let cancel = {
        let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
        move |job_id: String| {
            let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
            spawn_local(async move {
                let _ = owner_call(&swarm_id, &owner_key, OwnerCommand::CancelJob { job_id }).await;
            });
        }
    };
    // Newest first, a page at a time; finished jobs but the newest are folded to one line.
    let show_all = RwSignal::new(false);
    let all_jobs = move || {
        snapshot
            .get()
            .map(|s| s.jobs)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
    };
    let jobs = move || {
        let mut jobs = all_jobs();
        if !show_all.get() {
            jobs.truncate(JOBS_PER_PAGE);
        }
        jobs
    };
    let hidden_jobs = move || all_jobs().len().saturating_sub(JOBS_PER_PAGE);
    let newest_finished = Memo::new(move |_| {
        snapshot.with(|s| {
            s.as_ref().and_then(|s| {
                s.jobs
                    .iter()
                    .rev()
                    .find(|j| matches!(j.state, JobState::Done | JobState::Cancelled))
                    .map(|j| j.job_id.clone())
            })
        })
    });
    view! {
        <section class="card" class:hidden=move || hidden.get()>
            <h2>"Jobs"</h2>
            <Show when=move || owner.get()>
                <form class="row" on:submit=submit.clone()>
                    <select data-testid="job-kind" aria-label="Job kind" on:change=move |ev| { values.set(Default::default()); kind.set(event_target_value(&ev)); }>
                        {crate::jobs::KINDS.iter().map(|(value, label)| view! { <option value=*value>{*label}</option> }).collect_view()}
                    </select>
                    {move || crate::jobs::fields(&kind.get()).iter().map(|(name, label, default)| {
                        let name = *name;
                        view! {
                            <label class="inline">{*label}" "
                                <input class="narrow" data-testid=format!("job-{}", name.replace('_', "-")) prop:value=*default
                                    on:input=move |ev| values.update(|v| { v.insert(name.to_owned(), event_target_value(&ev)); })/>
                            </label>
                        }
                    }).collect_view()}
                    <button type="submit" data-testid="submit-job" disabled=move || submitted.with(|s| s.as_deref() == Some("Submitting…"))>"Submit job"</button>
                </form>
                {move || error.get().map(|e| view! { <p class="error" data-testid="job-error">{e}</p> })}
                <p class="muted" role="status" data-testid="job-submitted">{move || submitted.get()}</p>
            </Show>
            <ul class="jobs">
                // One row per job for its whole life (its canvas keeps what it drew); the
                // values in it follow the snapshots.
                <For each=jobs key=|j| j.job_id.clone() children=move |job| {
                    let cancel = cancel.clone();
                    let id = job.job_id.clone();
                    let spec = job.spec.clone();
                    let title = crate::jobs::title(&job.spec);
                    let current = Memo::new({
                        let id = id.clone();
                        move |_| {
                            snapshot.with(|s| s.as_ref().and_then(|s| s.jobs.iter().find(|j| j.job_id == id).cloned()))
                                .unwrap_or_else(|| job.clone())
                        }
                    });
                    let state = move || match current.with(|j| j.state) {
                        JobState::Queued => "queued",
                        JobState::Running => "running",
                        JobState::Done => "done",
                        JobState::Cancelled => "cancelled",
                    };
                    let live = move || current.with(|j| matches!(j.state, JobState::Queued | JobState::Running));
                    // Finished jobs but the newest are folded to their title, result and times.
                    // The user's Show / Hide, once they chose.
                    let chosen = RwSignal::new(None::<bool>);
                    let folded = {
                        let id = id.clone();
                        Signal::derive(move || {
                            !live() && chosen.get().unwrap_or_else(|| newest_finished.with(|n| n.as_deref() != Some(id.as_str())))
                        })
                    };
                    // Reactive, so that links drawn before the coordinator is known follow it.
                    let result_url = {
                        let (sid, jid) = (swarm_id.clone(), id.clone());
                        Signal::derive(move || {
                            let origin = coordinator.get();
                            if origin.is_empty() { String::new() } else { route::job_url(&origin, &sid, &jid) }
                        })
                    };
                    // Rate and ETA over the last half minute of snapshots, so they do not swing.
                    let progress = StoredValue::new(crate::jobs::Progress::default());
                    let speed = move || {
                        let (now, run_state, online) = snapshot.with(|s| {
                            s.as_ref().map_or((0, RunState::Running, 0), |s| (s.now_ms, s.run_state, s.online))
                        });
                        current.with(|job| {
                            progress.update_value(|p| p.observe(now, job.done_units));
                            progress.with_value(|p| crate::jobs::status_line(job, run_state, online, p))
                        })
                    };
                    // A workload job's results, saved as one NDJSON file once it ended (the
                    // endpoint needs the owner key, so a plain link would not do).
                    let results = matches!(spec, JobSpec::Workload { .. }).then(|| {
                        let (owner_key, id) = (owner_key.clone(), id.clone());
                        let status = RwSignal::new(String::new());
                        let download = move |_| {
                            let (owner_key, id, url) = (owner_key.clone(), id.clone(), result_url.get_untracked());
                            spawn_local(async move {
                                status.set("Downloading…".to_owned());
                                status.set(download_results(&url, &owner_key, &id, status).await);
                            });
                        };
                        view! {
                            <Show when=move || owner.get() && !live()>
                                <button class="small" data-testid="job-results" on:click=download.clone()>"Results (NDJSON)"</button>
                                <span class="muted" role="status" data-testid="job-results-status">{move || status.get()}</span>
                            </Show>
                        }
                    });
                    let image = match spec {
                        JobSpec::Mandelbrot { width, height, .. } => {
                            // Bands are stored when accepted, or when verified for a device not
                            // trusted yet: any of these moving may bring new ones.
                            let progress = Signal::derive(move || current.with(|j| (j.done_units, j.unverified_units, j.state)));
                            let file = format!("mandelbrot-{}.png", id.get(..8).unwrap_or(&id));
                            Some(view! {
                                <a href=move || format!("{}/image.png", result_url.get()) download=file data-testid="job-png">"PNG"</a>
                                <LiveImage job_url=result_url width height progress/>
                            })
                        }
                        _ => None,
                    };
                    view! {
                        <li data-testid="job-row" data-job-id=id.clone() data-state=state class:folded=folded>
                            <div class="row">
                                <b>{title}</b>
                                <span class="muted">{state}</span>
                                <span class="muted">{speed}</span>
                                {move || (!live()).then(|| view! {
                                    <button class="small" data-testid="job-fold" aria-expanded=move || (!folded.get()).to_string()
                                        on:click=move |_| chosen.set(Some(!folded.get_untracked()))>
                                        {move || if folded.get() { "Show" } else { "Hide" }}</button>
                                })}
                            </div>
                            <div class="muted small" data-testid="job-times">{move || current.with(|j| crate::jobs::timeline(j, browser::clock))}</div>
                            <div class="bar"><div class="fill" style=move || format!("width: {}%", current.with(|j| format::fixed(format::percent(j.done_units, j.total_units), 1)))></div></div>
                            <div class="row">
                                <span data-testid="job-result">{move || current.with(crate::jobs::summary)}</span>
                                <span class="muted" data-testid="job-verification">{move || current.with(crate::jobs::verification)}</span>
                                <a href=result_url target="_blank">"JSON"</a>
                                {image}
                                {results}
                                {let id = id.clone(); move || (live() && owner.get()).then(|| {
                                    let (cancel, id) = (cancel.clone(), id.clone());
                                    view! {
                                        <button class="small danger" data-testid="job-cancel" on:click=move |_| cancel(id.clone())>"Cancel"</button>
                                    }
                                })}
                            </div>
                        </li>
                    }
                }/>
            </ul>
            {move || (hidden_jobs() > 0 || show_all.get()).then(|| view! {
                <button class="small" data-testid="jobs-more" on:click=move |_| show_all.update(|s| *s = !*s)>
                    {move || if show_all.get() { "Show fewer jobs".to_owned() } else { format!("Show {} older jobs", hidden_jobs()) }}</button>
            })}
        </section>
    }
}

/// Reads every answer of a workload job's results endpoint and saves the item lines as
/// `results-<job>.ndjson`; what to tell the user.
async fn download_results(
    job_url: &str,
    owner_key: &str,
    job_id: &str,
    status: RwSignal<String>,
) -> String {
    use crate::jobs::{AfterResults, ResultsDownload};
    let mut download = ResultsDownload::default();
    loop {
        let url = format!("{job_url}/results?from={}", download.next);
        let after = match browser::get_text_as_owner(&url, owner_key).await {
            Ok(body) => download.answer(&body),
            Err(why) => return format!("The results could not be read: {why}"),
        };
        match after {
            AfterResults::Done | AfterResults::Cancelled => break,
            AfterResults::Stalled => {
                return "The results stream stopped coming; try again.".to_owned()
            }
            AfterResults::More => status.set(format!(
                "Downloading… {} items",
                format::thousands(download.next)
            )),
        }
    }
    let name = format!("results-{}.ndjson", job_id.get(..8).unwrap_or(job_id));
    match browser::save_text(&name, &download.text, "application/x-ndjson") {
        Some(()) => format!("Saved {} items as {name}", format::thousands(download.next)),
        None => "This browser could not save the file.".to_owned(),
    }
}

/// Jobs shown before *Show older jobs*.
const JOBS_PER_PAGE: usize = 5;

/// A Mandelbrot job's image on a canvas, drawn band by band as the coordinator stores them
/// (`…/bands?after=N`, see [`crate::jobs::ImageFollower`]): whenever the job's progress moves,
/// only the new bands are fetched; the whole PNG is never downloaded again.
#[component]
fn LiveImage(
    job_url: Signal<String>,
    width: u32,
    height: u32,
    progress: Signal<(u64, u64, JobState)>,
) -> impl IntoView {
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let follower = StoredValue::new(crate::jobs::ImageFollower::default());
    // One fetch at a time; progress seen meanwhile asks for one more round.
    let busy = StoredValue::new(false);
    let again = StoredValue::new(false);
    let filled = StoredValue::new(false);
    Effect::new(move |_| {
        let _ = progress.get();
        let url = job_url.get();
        let Some(canvas) = canvas.get() else { return };
        if url.is_empty() {
            return;
        }
        let Some(ctx) = browser::canvas_2d(&canvas) else {
            return;
        };
        let element: web_sys::Element = (*canvas).clone().into();
        if !filled.get_value() {
            filled.set_value(true);
            browser::clear_rows(&ctx, width, 0, height);
        }
        if busy.get_value() {
            again.set_value(true);
            return;
        }
        busy.set_value(true);
        spawn_local(async move {
            loop {
                again.set_value(false);
                let next = follower.with_value(|f| f.url(&url));
                let Some(answer) = browser::get_json::<shared_protocol::ImageBands>(&next).await
                else {
                    break;
                };
                let more = answer.more;
                let paint = follower
                    .try_update_value(|f| f.absorb(answer))
                    .unwrap_or_default();
                for step in paint {
                    match step {
                        crate::jobs::Paint::Band { first_row, png } => {
                            if let Some(rows) = browser::draw_png(&ctx, &png, first_row).await {
                                follower.update_value(|f| f.drew(first_row, rows));
                            }
                        }
                        crate::jobs::Paint::Clear { first_row, rows } => {
                            browser::clear_rows(&ctx, width, first_row, rows)
                        }
                    }
                }
                let rows = follower.with_value(|f| f.rows_drawn());
                let _ = element.set_attribute("data-rows-drawn", &rows.to_string());
                if !more && !again.get_value() {
                    break;
                }
            }
            busy.set_value(false);
        });
    });
    view! {
        <canvas class="job-image" node_ref=canvas width=width height=height data-testid="job-canvas"
            data-rows-drawn="0" role="img" aria-label="Mandelbrot image so far"
            style=format!("aspect-ratio: {width} / {height}")></canvas>
    }
}

fn run_state_text(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Stopped => "stopped",
    }
}

/// One row of the devices table; the owner gets enable/disable and remove buttons.
/// One row of the devices table, for as long as the device is listed; every value follows
/// the snapshots (and "last seen" the coordinator's clock in them).
#[component]
fn DeviceRow(
    device: DeviceView,
    snapshot: RwSignal<Option<SwarmSnapshot>>,
    velocity: RwSignal<crate::chart::Velocity>,
    owner: RwSignal<bool>,
    swarm_id: String,
    owner_key: String,
) -> impl IntoView {
    let id = device.id.clone();
    let current = Memo::new({
        let id = id.clone();
        move |_| {
            snapshot
                .with(|s| {
                    s.as_ref()
                        .and_then(|s| s.devices.iter().find(|d| d.id == id).cloned())
                })
                .unwrap_or_else(|| device.clone())
        }
    });
    let now = move || snapshot.with(|s| s.as_ref().map_or(0, |s| s.now_ms));
    let online = move || current.with(|d| d.status == DeviceStatus::Online);
    let enabled = move || current.with(|d| d.enabled);
    let name = move || current.with(|d| d.name.clone());
    let act = {
        let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
        move |command: OwnerCommand| {
            let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
            spawn_local(async move {
                let _ = owner_call(&swarm_id, &owner_key, command).await;
            });
        }
    };
    let toggle = {
        let (act, device_id) = (act.clone(), id.clone());
        move |_| {
            act(OwnerCommand::SetDeviceEnabled {
                device_id: device_id.clone(),
                enabled: !enabled(),
            })
        }
    };
    let remove = {
        let device_id = id.clone();
        move |_| {
            act(OwnerCommand::RemoveDevice {
                device_id: device_id.clone(),
            })
        }
    };
    let field = move |f: fn(&DeviceView) -> String| move || current.with(f);
    // Renaming: the name cell becomes a small form until it is saved or cancelled.
    let editing = RwSignal::new(false);
    let draft = RwSignal::new(String::new());
    let rename_error = RwSignal::new(None::<String>);
    let rename = {
        let (swarm_id, owner_key, device_id) = (swarm_id.clone(), owner_key.clone(), id.clone());
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let name = match crate::forms::device_name(&draft.get_untracked()) {
                Ok(name) => name,
                Err(message) => return rename_error.set(Some(message)),
            };
            let command = OwnerCommand::RenameDevice {
                device_id: device_id.clone(),
                name,
            };
            let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
            spawn_local(async move {
                match owner_call(&swarm_id, &owner_key, command).await {
                    Ok(_) => {
                        rename_error.set(None);
                        editing.set(false);
                    }
                    Err(message) => rename_error.set(Some(message)),
                }
            });
        }
    };
    let start_rename = move |_| {
        draft.set(name());
        rename_error.set(None);
        editing.set(true);
    };
    view! {
        <tr data-testid="device-row" data-device-id=id.clone()>
            <td data-label="Name">
                <div>
                    <Show when=move || editing.get() fallback=move || view! {
                        <span data-testid="device-name">{name}</span>
                        <Show when=move || owner.get()>
                            " "<button class="link" data-testid="device-rename" on:click=start_rename
                                aria-label=move || format!("Rename {}", name())>"Rename"</button>
                        </Show>
                    }>
                        <form class="rename" on:submit=rename.clone()>
                            <input data-testid="device-rename-input" maxlength="64"
                                aria-label=move || format!("New name for {}", name())
                                prop:value=move || draft.get() on:input=move |ev| draft.set(event_target_value(&ev))/>
                            <button type="submit" class="small" data-testid="device-rename-save">"Save"</button>
                            <button type="button" class="small secondary" on:click=move |_| editing.set(false)>"Cancel"</button>
                        </form>
                    </Show>
                    {move || current.with(|d| (!d.enabled).then(|| {
                        let why = if d.quarantined { " (quarantined: a wrong result)" } else { " (disabled)" };
                        view! { <span class="muted" data-testid="device-disabled">{why}</span> }
                    }))}
                    <br/><code class="muted">{format!("#{}", id.get(..8).unwrap_or(&id))}</code>
                    {move || rename_error.get().map(|e| view! { <p class="error" role="alert" data-testid="device-rename-error">{e}</p> })}
                </div>
            </td>
            <td data-label="Status"><div>
                <span class=move || if online() { "status online" } else { "status offline" } data-testid="device-status">
                    {move || if online() { "ONLINE" } else { "OFFLINE" }}</span>
                <br/><span class="muted" data-testid="device-seen">{move || current.with(|d| format::seen(d.status == DeviceStatus::Online, now(), d.last_seen_ms))}</span>
            </div></td>
            <td data-label="Hardware" class="wrap">{field(|d| format::hardware(&d.capabilities))}</td>
            <td data-label="Speed"><div>
                <span data-testid="device-speed">{field(|d| d.speed.map_or("—".into(), |s| format!("{}×", format::fixed(s, 2))))}</span>
                <svg class="spark" viewBox="0 0 60 16" preserveAspectRatio="none" aria-hidden="true">
                    <polyline fill="none" stroke="currentColor" stroke-width="1.5"
                        points={let id = id.clone(); move || velocity.with(|v| crate::chart::sparkline(&v.speeds_of(&id), 60.0, 16.0))}/>
                </svg>
                <br/><span class="muted">"benchmark "<span data-testid="device-score">{field(|d| d.score.map_or("—".into(), |s| format!("{}×", format::fixed(s, 2))))}</span></span>
            </div></td>
            <td data-label="Share">{field(|d| format!("{} %", format::fixed(d.weight_percent, 0)))}</td>
            <td data-label="In flight" data-testid="device-in-flight">{field(|d| d.in_flight.to_string())}</td>
            <td data-label="Done" data-testid="device-done">{field(|d| format::thousands(d.chunks_done))}</td>
            <td data-label="Trust" class="wrap" data-testid="device-trust">{field(|d| format::credibility(d.trusted, d.confirmed, d.replicated, d.disputed))}</td>
            <td class="actions">
                <Show when=move || owner.get()>
                    <button class="small" data-testid="device-toggle" on:click=toggle.clone()
                        aria-label=move || format!("{} {}", if enabled() { "Disable" } else { "Enable" }, name())>
                        {move || if enabled() { "Disable" } else { "Enable" }}</button>
                    <button class="small danger" data-testid="device-remove" on:click=remove.clone()
                        aria-label=move || format!("Remove {}", name())>"Remove"</button>
                </Show>
            </td>
        </tr>
    }
}

/// The owner's controls: run state, throttle, invites and the owner link.
#[component]
fn OwnerPanel(
    swarm_id: String,
    owner_key: String,
    snapshot: RwSignal<Option<SwarmSnapshot>>,
) -> impl IntoView {
    let invites = RwSignal::new(Vec::<InviteView>::new());
    let created = RwSignal::new(None::<(String, String, String)>); // (invite id, link, code)
    let error = RwSignal::new(None::<String>);
    let (ttl_hours, set_ttl_hours) = signal(24u64);
    let (max_uses, set_max_uses) = signal(String::new());
    let origin = browser::page_origin();

    let call = {
        let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
        move |command: OwnerCommand| {
            let (swarm_id, owner_key) = (swarm_id.clone(), owner_key.clone());
            async move { owner_call(&swarm_id, &owner_key, command).await }
        }
    };
    let refresh = {
        let call = call.clone();
        move || {
            let call = call.clone();
            spawn_local(async move {
                if let Ok(OwnerReply::Invites { invites: live }) =
                    call(OwnerCommand::ListInvites {}).await
                {
                    // The QR code of an invite that can no longer be used goes away.
                    let gone = created.with_untracked(|c| {
                        c.as_ref()
                            .is_some_and(|(id, _, _)| !live.iter().any(|i| i.invite_id == *id))
                    });
                    if gone {
                        created.set(None);
                    }
                    invites.set(live);
                }
            });
        }
    };
    refresh();
    // Use counts change when a device joins: list the invites again when the count of devices
    // does (not every tick).
    Effect::new({
        let refresh = refresh.clone();
        move |seen: Option<Option<u32>>| {
            let total = snapshot.with(|s| s.as_ref().map(|s| s.device_total));
            if seen.is_some_and(|seen| seen != total) {
                refresh();
            }
            total
        }
    });
    // "Copied" after a copy button, for two seconds.
    let copied = RwSignal::new(None::<&'static str>);
    let copy = move |what: &'static str, text: &str| {
        browser::copy_text(text);
        copied.set(Some(what));
        spawn_local(async move {
            browser::sleep(2_000).await;
            copied.set(None);
        });
    };

    let create = {
        let (call, refresh, swarm_id, origin) = (
            call.clone(),
            refresh.clone(),
            swarm_id.clone(),
            origin.clone(),
        );
        move |_| {
            let (call, refresh, swarm_id, origin) = (
                call.clone(),
                refresh.clone(),
                swarm_id.clone(),
                origin.clone(),
            );
            let max_uses = match crate::forms::use_limit(&max_uses.get_untracked()) {
                Ok(max_uses) => max_uses,
                Err(message) => return error.set(Some(message)),
            };
            let ttl_ms = Some(ttl_hours.get_untracked() * 3_600_000);
            error.set(None);
            spawn_local(async move {
                match call(OwnerCommand::CreateInvite { ttl_ms, max_uses }).await {
                    Ok(OwnerReply::InviteCreated {
                        invite,
                        token,
                        code,
                    }) => {
                        let link = route::invite_link(&origin, &swarm_id, &token);
                        created.set(Some((invite.invite_id, link, code)));
                        refresh();
                    }
                    Ok(_) => {}
                    Err(message) => error.set(Some(message)),
                }
            });
        }
    };
    let set_state = {
        let call = call.clone();
        move |state: RunState| {
            let call = call.clone();
            spawn_local(async move {
                let _ = call(OwnerCommand::SetRunState { state }).await;
            });
        }
    };
    let set_throttle = {
        let call = call.clone();
        move |ev: leptos::ev::Event| {
            let call = call.clone();
            if let Ok(percent) = event_target_value(&ev).parse::<u8>() {
                spawn_local(async move {
                    let _ = call(OwnerCommand::SetThrottle { percent }).await;
                });
            }
        }
    };
    let owner_link = route::owner_link(&origin, &swarm_id, &owner_key);
    let throttle = move || snapshot.get().map_or(100, |s| s.throttle_percent);
    let run_state = move || snapshot.with(|s| s.as_ref().map(|s| s.run_state));
    let (run, pause, stop) = (set_state.clone(), set_state.clone(), set_state);
    let revoke = move |invite_id: String| {
        let (call, refresh) = (call.clone(), refresh.clone());
        spawn_local(async move {
            let _ = call(OwnerCommand::RevokeInvite { invite_id }).await;
            refresh();
        });
    };
    view! {
        <section class="card" data-testid="owner-panel">
            <h2>"Controls"</h2>
            <div class="row">
                // The swarm's current state is the pressed button.
                <button data-testid="run" class:active=move || run_state() == Some(RunState::Running)
                    aria-pressed=move || (run_state() == Some(RunState::Running)).to_string()
                    on:click=move |_| run(RunState::Running)>"Run"</button>
                <button data-testid="pause" class:active=move || run_state() == Some(RunState::Paused)
                    aria-pressed=move || (run_state() == Some(RunState::Paused)).to_string()
                    on:click=move |_| pause(RunState::Paused)>"Pause"</button>
                <button data-testid="stop" class:active=move || run_state() == Some(RunState::Stopped)
                    aria-pressed=move || (run_state() == Some(RunState::Stopped)).to_string()
                    on:click=move |_| stop(RunState::Stopped)>"Stop"</button>
            </div>
            <label>"Throttle: " {throttle} " %"
                <input type="range" min="0" max="100" step="5" data-testid="throttle" prop:value=throttle on:change=set_throttle/>
            </label>
        </section>
        <section class="card">
            <h2>"Invite devices"</h2>
            <div class="row">
                <label class="inline">"Valid for "
                    <select data-testid="invite-ttl" on:change=move |ev| set_ttl_hours.set(event_target_value(&ev).parse().unwrap_or(24))>
                        <option value="1">"1 hour"</option>
                        <option value="24" selected>"24 hours"</option>
                        <option value="168">"7 days"</option>
                    </select>
                </label>
                <label class="inline">"Uses "
                    <input class="narrow" data-testid="invite-uses" placeholder="unlimited" inputmode="numeric"
                        prop:value=max_uses on:input=move |ev| set_max_uses.set(event_target_value(&ev))/>
                </label>
                <button data-testid="create-invite" on:click=create>"Create invite"</button>
            </div>
            {move || error.get().map(|e| view! { <p class="error" data-testid="invite-error">{e}</p> })}
            {move || created.get().map(|(invite_id, link, code)| {
                let svg = qr_svg(&link).unwrap_or_default();
                let (copy_link, share_link, copy_code) = (link.clone(), link.clone(), code.clone());
                view! {
                    <div class="invite" data-testid="invite-created" data-invite-id=invite_id>
                        <div class="qr" data-testid="invite-qr" inner_html=svg></div>
                        <div>
                            <p>"Scan the code, open the link, or type the code on the start page."</p>
                            <p><a data-testid="invite-link" href=link.clone() target="_blank">{link.clone()}</a></p>
                            <p class="code" data-testid="invite-code">{code}</p>
                            <div class="row">
                                <button class="small" data-testid="copy-link" on:click=move |_| copy("Link copied", &copy_link)>"Copy link"</button>
                                <button class="small" data-testid="copy-code" on:click=move |_| copy("Code copied", &copy_code)>"Copy code"</button>
                                {browser::can_share().then(|| view! {
                                    <button class="small" on:click=move |_| browser::share("Join my Ostrich Legs swarm", &share_link)>"Share"</button>
                                })}
                                <span class="muted" role="status" data-testid="copied">{move || copied.get()}</span>
                            </div>
                        </div>
                    </div>
                }
            })}
            <h3>"Live invites"</h3>
            <ul class="invites">
                <For each=move || invites.get() key=|i| (i.invite_id.clone(), i.uses) children=move |i| {
                    let revoke = revoke.clone();
                    let id = i.invite_id.clone();
                    let uses = crate::forms::invite_uses(i.uses, i.max_uses);
                    let left = format::ago(i.expires_ms, now_ms()).replace(" ago", "");
                    view! {
                        <li data-testid="invite-row" data-invite-id=i.invite_id.clone()>
                            <code>{format!("#{}", &i.invite_id[..8])}</code>" · "{uses}" · expires in "{left}" "
                            <button class="small danger" data-testid="invite-revoke" on:click=move |_| revoke(id.clone())>"Revoke"</button>
                        </li>
                    }
                }/>
            </ul>
            <p class="muted">"Owner link (opens this dashboard with owner rights on another device — keep it secret): "
                <button class="small" data-testid="copy-owner-link" on:click=move |_| copy("Owner link copied", &owner_link)>"Copy owner link"</button>
                " "<span role="status">{move || (copied.get() == Some("Owner link copied")).then_some("Copied")}</span>
            </p>
        </section>
    }
}

// ---------- device ----------

/// This browser as a device of the swarm. `proof` comes from an invite link or code.
#[component]
fn DevicePage(swarm_id: String, proof: Option<JoinProof>) -> impl IntoView {
    let nav = browser::navigator();
    let capabilities = device_info::capabilities(&nav);
    let name = browser::storage_get(keys::DEVICE_NAME)
        .unwrap_or_else(|| device_info::default_name(&nav.user_agent));
    let credential_key = keys::device_credential(&swarm_id);
    let credential: Option<DeviceCredential> =
        browser::storage_get(&credential_key).and_then(|text| serde_json::from_str(&text).ok());
    // The owner's own browsers join with the owner key; everyone else needs an invite.
    let proof = proof.or_else(|| {
        browser::storage_get(&keys::owner_key(&swarm_id))
            .map(|owner_key| JoinProof::OwnerKey { owner_key })
    });
    let needs_invite = credential.is_none() && proof.is_none();
    let state = RwSignal::new(LinkState::Connecting { attempt: 0 });
    let device_id = RwSignal::new(credential.as_ref().map(|c| c.device_id.clone()));
    let swarm_name = RwSignal::new(String::new());
    let rtt = RwSignal::new(None::<u64>);
    let tally = RwSignal::new(crate::work::Tally::default());
    let share = RwSignal::new(None::<shared_protocol::DeviceShare>);
    let missing = RwSignal::new(false);
    let cores = capabilities.cores;
    let identity = Identity::Device {
        name: name.clone(),
        capabilities,
        credential,
        invite: proof,
    };

    // "Cores to lend": remembered per swarm; 0 pauses this device.
    let lend_key = keys::lend(&swarm_id);
    let lend = RwSignal::new(
        browser::storage_get(&lend_key)
            .and_then(|v| v.parse::<u16>().ok())
            .map_or(cores, |v| v.min(cores)),
    );
    let (lend_tx, lend_rx) = futures::channel::mpsc::unbounded::<u16>();
    if lend.get_untracked() != cores {
        let _ = lend_tx.unbounded_send(lend.get_untracked());
    }
    let set_lend = move |cores_lent: u16| {
        lend.set(cores_lent);
        browser::storage_set(&lend_key, &cores_lent.to_string());
        let _ = lend_tx.unbounded_send(cores_lent);
    };
    let remembered = RwSignal::new(lend.get_untracked().max(1));
    if !needs_invite {
        let (swarm_id, credential_key) = (swarm_id.clone(), credential_key.clone());
        spawn_local(async move {
            let origin = coordinator_origin().await;
            if !swarm_exists(&origin, &swarm_id).await {
                return missing.set(true);
            }
            let device_path = Route::device_path(&swarm_id);
            let pool = browser::WorkerPool::new(
                usize::from(cores),
                format!("{origin}/api/swarms/{swarm_id}"),
            );
            // A device skips the dashboard's snapshots unread.
            drive::<serde::de::IgnoredAny, shared_protocol::Work, _>(
                Link::new(identity),
                ws_url(&origin, &swarm_id),
                pool,
                Some(lend_rx),
                move |link, event| {
                    state.set(link.state().clone());
                    if *link.state() != LinkState::Online
                        && tally.with_untracked(|t| t.current().is_some())
                    {
                        // The coordinator withdraws a dropped connection's leases.
                        tally.update(|t| t.withdrawn(None));
                    }
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
                                // The invite did its job: keep it out of the address bar and history.
                                browser::replace_url(&device_path);
                            }
                        }
                        Some(LinkEvent::Ack { rtt_ms }) => rtt.set(Some(rtt_ms)),
                        Some(LinkEvent::Lease {
                            lease_id,
                            job_id,
                            work,
                        }) => tally.update(|t| t.leased(lease_id, &job_id, &work)),
                        Some(LinkEvent::Computed {
                            lease_id,
                            compute_ms,
                        }) => tally.update(|t| t.computed(lease_id, compute_ms)),
                        Some(LinkEvent::Failed { lease_id, error }) => {
                            tally.update(|t| t.failed(lease_id, error))
                        }
                        Some(LinkEvent::CancelLease { lease_id }) => {
                            tally.update(|t| t.withdrawn(Some(lease_id)))
                        }
                        Some(LinkEvent::Share(given)) => share.set(Some(given)),
                        Some(LinkEvent::Refused) => {
                            if let LinkState::Refused {
                                code: ErrorCode::BadCredential,
                                ..
                            } = link.state()
                            {
                                browser::storage_remove(&credential_key);
                            }
                        }
                        _ => {}
                    }
                },
            )
            .await;
        });
    }
    let refusal = move || match state.get() {
        LinkState::Refused { code, message } => Some((code, message)),
        _ => None,
    };
    view! {
        <Show when=move || missing.get()><SwarmMissing/></Show>
        {needs_invite.then(|| view! {
            <section class="card" data-testid="needs-invite">
                <h2>"You need an invite"</h2>
                <p>"Ask the swarm's owner for an invite: scan its QR code, open its link, or type its code on the "<a href="/">"start page"</a>"."</p>
            </section>
        })}
        {move || refusal().map(|(code, message)| {
            let title = match code {
                ErrorCode::InviteExpired => "This invite has expired",
                ErrorCode::InviteRevoked => "This invite was revoked",
                ErrorCode::InviteExhausted => "This invite has been used up",
                ErrorCode::InviteInvalid | ErrorCode::InviteRequired => "This invite is not valid",
                ErrorCode::BadCredential => "This device is no longer part of the swarm",
                ErrorCode::BadResult => "This device returned a wrong result",
                _ => "The swarm refused this device",
            };
            let sentence = format::error_sentence(code, &message);
            let next = (code == ErrorCode::BadResult).then_some("Reload this page after that.");
            view! {
                <section class="card" data-testid="join-refused" data-code=shared_protocol::encode(&code).trim_matches('"').to_owned()>
                    <h2>{title}</h2>
                    <p>{sentence}</p>
                    {next.map(|next| view! { <p>{next}</p> })}
                </section>
            }
        })}
        <section class="card" class:hidden=move || missing.get() || needs_invite || refusal().is_some()>
            <h1>"This device"</h1>
            <p class="muted">{move || if swarm_name.get().is_empty() { String::new() } else { format!("in swarm “{}”", swarm_name.get()) }}</p>
            <p class="notice" role="status" data-testid="device-notice">
                {move || share.get().and_then(|s| format::idle_reason(&s, lend.get())).unwrap_or_default()}
            </p>
            <dl class="facts">
                <dt>"Status"</dt><dd data-testid="device-state" aria-live="polite">{move || format::link_state(&state.get(), now_ms())}</dd>
                <dt>"Name"</dt><dd data-testid="device-name">{name}</dd>
                <dt>"Device id"</dt><dd data-testid="device-id">{move || device_id.get().unwrap_or_else(|| "—".into())}</dd>
                <dt>"Cores"</dt><dd>{cores}</dd>
                <dt>"Round trip"</dt><dd>{move || rtt.get().map_or("—".into(), |ms| format!("{ms} ms"))}</dd>
                <dt>"Cores to lend"</dt>
                <dd>
                    <input type="range" min="0" max=cores data-testid="lend-cores" aria-label="Cores to lend" prop:value=move || lend.get()
                        on:change={
                            let set_lend = set_lend.clone();
                            move |ev| if let Ok(n) = event_target_value(&ev).parse::<u16>() { set_lend(n) }
                        }/>
                    " " {move || lend.get()} " of " {cores}
                    <button class="small" data-testid="pause-device" on:click={
                        let set_lend = set_lend.clone();
                        move |_| {
                            if lend.get_untracked() == 0 {
                                set_lend(remembered.get_untracked());
                            } else {
                                remembered.set(lend.get_untracked());
                                set_lend(0);
                            }
                        }
                    }>{move || if lend.get() == 0 { "Resume" } else { "Pause" }}</button>
                </dd>
                <dt>"Computing with"</dt><dd data-testid="device-share">{move || share.get().map_or("—".into(), |s| format::share(&s))}</dd>
                <dt>"Benchmark"</dt><dd data-testid="bench-score">{move || tally.with(|t| t.bench_score.map_or("—".into(), |s| format!("{}× a reference core", format::fixed(s, 2))))}</dd>
                <dt>"Current chunk"</dt><dd data-testid="current-chunk">{move || tally.with(|t| t.current().unwrap_or("—").to_owned())}</dd>
                <dt>"Chunks"</dt><dd data-testid="chunks-done">{move || tally.with(|t| t.chunks_done)}</dd>
                <dt>"Throughput"</dt><dd>{move || tally.with(|t| t.units_per_second.map_or("—".into(), |r| format!("{} per worker", format::rate(r, t.unit))))}</dd>
                <Show when=move || tally.with(|t| t.last_error.is_some())>
                    <dt>"Last failed chunk"</dt><dd data-testid="lease-error">{move || tally.with(|t| t.last_error.clone().unwrap_or_default())}</dd>
                </Show>
            </dl>
        </section>
    }
}
