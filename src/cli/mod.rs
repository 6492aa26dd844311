//! The operator's commands against a running instance: `routes`, `status`, `resolve`,
//! `explain`, `reload`, `plan`, `rollout`. They use the admin API (plain HTTP/1.1 on loopback, a bearer token when given).

use std::time::Duration;

use serde_json::Value;

pub mod args;
mod client;

pub use client::{Admin, dechunked};

/// `switchyard reload`: the running instance re-reads its configuration file.
pub fn reload(admin: &Admin) -> Result<String, String> {
    let report = admin.call("POST", "/v1/reload")?;
    let list = |key: &str| -> String {
        let names: Vec<&str> = report[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    };
    Ok(format!(
        "configuration reloaded\napplied: {}\nneeds a restart or upgrade: {}\n",
        list("applied"),
        list("restart_required")
    ))
}

/// `value` with every string in it as it is shown ([`crate::text::escaped`]): the text output
/// prints names, ids and reasons that come from apps' labels and the scheduler, and a control
/// character in one would forge a line or drive the terminal. The `--json` outputs print the
/// answer as it is (JSON escapes them).
fn shown(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(crate::text::escaped(&s).to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(shown).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (crate::text::escaped(&k).to_string(), shown(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `switchyard routes`: the live table, one route per paragraph.
pub fn routes(admin: &Admin, json: bool) -> Result<String, String> {
    let table = admin.get("/v1/routes")?;
    if json {
        return Ok(serde_json::to_string_pretty(&table).unwrap() + "\n");
    }
    let table = shown(table);
    let mut out = format!("generation {}\n", table["generation"]);
    for route in table["routes"].as_array().into_iter().flatten() {
        let listen: Vec<&str> = route["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let vhosts: Vec<&str> = route["vhosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let on = [listen.join(" "), vhosts.join(" ")]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>();
        let overridden = if route["overridden"] == true {
            " (weights overridden)"
        } else {
            ""
        };
        out += &format!(
            "\n{}  on {}{overridden}\n",
            route["name"].as_str().unwrap_or("?"),
            on.join(" ")
        );
        for m in route["members"].as_array().into_iter().flatten() {
            out += &format!(
                "  {:<40} weight {:>4} ({})  {} backends{}\n",
                m["app_id"].as_str().unwrap_or("?"),
                m["weight"],
                m["weight_from"].as_str().unwrap_or("?"),
                m["backends"],
                not_up(&table["services"], m),
            );
        }
        if route["rollout"].is_object() {
            out += &format!("  rollout: {}\n", rollout_line(&route["rollout"]));
        }
    }
    let problems = table["problems"].as_array().map_or(0, Vec::len);
    if problems > 0 {
        out += &format!("\n{problems} problems: `switchyard status` lists them\n");
    }
    Ok(out)
}

/// The member's backends that take no request now, by state, as ` (1 down, 2 ejected)`; empty
/// when every one is up. Read from the member's service in the same `/v1/routes` answer.
fn not_up(services: &Value, member: &Value) -> String {
    let service = services
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["app_id"] == member["app_id"] && s["port_index"] == member["port_index"]);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for b in service
        .and_then(|s| s["backends"].as_array())
        .into_iter()
        .flatten()
    {
        let state = b["state"].as_str().unwrap_or("?");
        if state == "up" {
            continue;
        }
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(" ({})", parts.join(", "))
}

/// `switchyard status`: sources, last sync, generation, readiness, problems.
pub fn status(admin: &Admin) -> Result<String, String> {
    let t = shown(admin.get("/v1/routes")?);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let since = |ms: &Value| match ms.as_u64() {
        Some(0) | None => "never".to_string(),
        Some(ms) => format!("{:.1} s ago", now_ms.saturating_sub(ms) as f64 / 1000.0),
    };
    let mut out = format!(
        "ready: {}\nsource connected: {}\nlast full sync: {}\ngeneration: {} (built {})\ntable hash: {}\nservices: {}  routes: {}\n",
        t["ready"],
        t["source_connected"],
        since(&t["last_sync_unix_ms"]),
        t["generation"],
        since(&t["created_unix_ms"]),
        t["table_hash"].as_str().unwrap_or("?"),
        t["services"].as_array().map_or(0, Vec::len),
        t["routes"].as_array().map_or(0, Vec::len),
    );
    if let Some(m) = t.get("mesos").filter(|m| m.is_object()) {
        out += &format!(
            "mesos: {} (leader {}), last snapshot {}, {} frameworks, {} agents, {} tasks, {} malformed records\n",
            if m["connected"] == true {
                "connected"
            } else {
                "disconnected"
            },
            m["leader"].as_str().unwrap_or("unknown"),
            since(&m["last_snapshot_unix_ms"]),
            m["frameworks"],
            m["agents"],
            m["tasks"],
            m["malformed_records"],
        );
    }
    for s in t["services"].as_array().into_iter().flatten() {
        if let Some(listener) = s["listener"]
            .as_str()
            .filter(|l| l.starts_with("bind failed"))
        {
            out += &format!("listener {}: {listener}\n", s["listen"]);
        }
    }
    for p in t["problems"].as_array().into_iter().flatten() {
        if let Some(source) = p["source"].as_str() {
            out += &format!(
                "{} source {source}: {}\n",
                p["severity"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?")
            );
            continue;
        }
        // An app's own problem (no port) is shown without one.
        let port = p["port_index"]
            .as_u64()
            .map_or(String::new(), |n| format!(" port {n}"));
        out += &format!(
            "{} {}{port}: {}\n",
            p["severity"].as_str().unwrap_or("?"),
            p["app_id"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("?")
        );
    }
    Ok(out)
}

/// `switchyard resolve NAME`: what DNS answers for a name, from the live zone.
/// With `json`, the admin API's answers as `{"hosts": [...], "services": [...]}` (exit 1 still
/// when there is no record, the JSON printed all the same).
pub fn resolve(admin: &Admin, name: &str, json: bool) -> Result<String, String> {
    let hosts = admin.get(&format!("/v1/hosts/{name}"))?;
    let services = admin.get(&format!("/v1/services/{name}"))?;
    let mut out = String::new();
    let (shown_hosts, shown_services) = (shown(hosts.clone()), shown(services.clone()));
    let name = &crate::text::escaped(name).to_string();
    for h in shown_hosts
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["ip"] != "")
    {
        out += &format!(
            "{}  A/AAAA  {}\n",
            h["host"].as_str().unwrap_or(name),
            h["ip"].as_str().unwrap_or("?")
        );
    }
    for s in shown_services
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["host"] != "")
    {
        out += &format!(
            "{}  SRV  {}:{}  ({})\n",
            s["service"].as_str().unwrap_or(name),
            s["host"].as_str().unwrap_or("?"),
            s["port"].as_str().unwrap_or("?"),
            s["ip"].as_str().unwrap_or("?")
        );
    }
    if json {
        let found = !out.is_empty();
        let answer = serde_json::json!({"hosts": hosts, "services": services});
        out = serde_json::to_string_pretty(&answer).unwrap() + "\n";
        if !found {
            print!("{out}");
            out.clear();
        }
    }
    if out.is_empty() {
        // A name with no record fails the command, as `host` and `dig +short`-based scripts
        // expect: exit 1, the reason on stderr.
        return Err(format!(
            "{name}: no A, AAAA or SRV record (NXDOMAIN, or a name outside the served zones)"
        ));
    }
    Ok(out)
}

/// `switchyard explain HOST [PATH]` or `switchyard explain PORT`.
/// With `json`, the admin API's answer (`/v1/explain`) as it is.
pub fn explain(admin: &Admin, args: &[String], json: bool) -> Result<String, String> {
    let query = match args {
        [port] if port.parse::<u16>().is_ok() => format!("port={port}"),
        [host] => format!("host={host}&path=/"),
        [host, path] => format!("host={host}&path={}", path.replace('&', "%26")),
        _ => return Err("explain HOST [PATH] | PORT".into()),
    };
    let answer = admin.get(&format!("/v1/explain?{query}"))?;
    if json {
        return Ok(serde_json::to_string_pretty(&answer).unwrap() + "\n");
    }
    let answer = shown(answer);
    let mut out = format!("{}\n", answer["why"].as_str().unwrap_or("?"));
    if let Some(service) = answer["service"].as_str() {
        out += &format!("  service {service}\n");
    }
    for m in answer["members"].as_array().into_iter().flatten() {
        out += &format!(
            "  app {} weight {} ({}), balance {}{}{}\n",
            m["app_id"].as_str().unwrap_or("?"),
            m["weight"],
            m["weight_from"].as_str().unwrap_or("?"),
            m["balance"].as_str().unwrap_or("?"),
            if m["sticky"] == true { ", sticky" } else { "" },
            if m["acl"] == true { ", source ACL" } else { "" },
        );
        for b in m["backends"].as_array().into_iter().flatten() {
            out += &format!(
                "    {}  {}  {}  active {}\n",
                b["address"].as_str().unwrap_or("?"),
                b["task_id"].as_str().unwrap_or("?"),
                b["state"].as_str().unwrap_or("?"),
                b["active"]
            );
        }
    }
    Ok(out)
}

/// `switchyard plan APP.json…`: what deploying these app definitions would change on the running
/// instance (`POST /v1/plan`). Each file holds one app, `{"app": {…}}`, `{"apps": […]}` or an
/// array. The output, and whether the change would break something (exit 3).
pub fn plan(
    admin: &Admin,
    files: &[std::path::PathBuf],
    json: bool,
) -> Result<(String, bool), String> {
    let mut apps = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
        match value {
            Value::Array(list) => apps.extend(list),
            Value::Object(mut o) if o.get("apps").is_some_and(Value::is_array) => {
                if let Some(Value::Array(list)) = o.remove("apps") {
                    apps.extend(list);
                }
            }
            Value::Object(mut o) if o.get("app").is_some_and(Value::is_object) => {
                apps.extend(o.remove("app"));
            }
            app @ Value::Object(_) => apps.push(app),
            _ => return Err(format!("{}: not an app definition", file.display())),
        }
    }
    let body = serde_json::json!({ "apps": apps }).to_string();
    let answer = admin.send("POST", "/v1/plan", &body)?;
    let broken = answer["breaking"]
        .as_array()
        .is_some_and(|b| b.iter().any(Value::is_string));
    if json {
        return Ok((
            serde_json::to_string_pretty(&answer).unwrap() + "\n",
            broken,
        ));
    }
    let plan = shown(answer);
    let breaking: Vec<&str> = plan["breaking"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let str_of = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    for app in plan["apps"].as_array().into_iter().flatten() {
        let how = match (app["replaces"] == true, app["kept_tasks"] == true) {
            (true, true) => "replaces the live app (its tasks kept)",
            (true, false) => "replaces the live app",
            _ => "new",
        };
        out += &format!("app {}: {how}\n", str_of(&app["id"]));
    }
    out += &format!(
        "table hash {} -> {}\n",
        str_of(&plan["table_hash_before"]),
        str_of(&plan["table_hash_after"])
    );
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        out += "no change to routes, services, vhosts, DNS names or problems\n";
    }
    for c in &changes {
        let sign = match c["change"].as_str() {
            Some("added") => "+",
            Some("removed") => "-",
            _ => "~",
        };
        let mut line = format!("  {sign} {:<8} {}", str_of(&c["kind"]), str_of(&c["name"]));
        match (c["before"].as_str(), c["after"].as_str()) {
            (Some(b), Some(a)) => line += &format!(": {b} -> {a}"),
            (Some(b), None) => line += &format!(" (was {b})"),
            (None, Some(a)) => line += &format!(" ({a})"),
            (None, None) => {}
        }
        out += &line;
        out += "\n";
    }
    if broken {
        out += "would break:\n";
        for b in &breaking {
            out += &format!("  ! {b}\n");
        }
    } else {
        out += "nothing would break\n";
    }
    Ok((out, broken))
}

/// A rollout in one line: `running, step 2 of 5: /shop-green at 5 % (against /shop-blue)`.
pub fn rollout_line(r: &Value) -> String {
    let state = r["state"].as_str().unwrap_or("?");
    let mut line = format!(
        "{state}, step {} of {}: {} at {} % (against {})",
        r["step"],
        r["steps"],
        r["canary"].as_str().unwrap_or("?"),
        r["share"],
        r["baseline"].as_str().unwrap_or("?"),
    );
    if let Some(reason) = r["reason"].as_str() {
        line += &format!(" — {reason}");
    }
    line
}

/// Route names hold `/` and `:`: encoded for a path segment.
fn encode_route(route: &str) -> String {
    route
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `30s`, `10m`, `1h`, `1h30m`.
fn duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("an empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (30s, 10m, 1h)"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit] {
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("{text:?} is not a duration (30s, 10m, 1h)")),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

/// The plan `rollout start` sends: the file's as it is, or one built from the flags.
fn plan_body(plan: &args::PlanArgs) -> Result<String, String> {
    if let Some(file) = &plan.plan {
        return std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()));
    }
    let mut body = serde_json::json!({ "steps": plan.steps, "hold": plan.hold });
    for (key, value) in [
        ("max_5xx_rate", plan.max_5xx_rate.map(Value::from)),
        ("max_p99_ratio", plan.max_p99_ratio.map(Value::from)),
        ("p99_floor_ms", plan.p99_floor_ms.map(Value::from)),
        ("min_requests", plan.min_requests.map(Value::from)),
        ("canary", plan.canary.clone().map(Value::from)),
        ("baseline", plan.baseline.clone().map(Value::from)),
    ] {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    Ok(body.to_string())
}

/// A rollout in a few lines: state, step, share, times, the last verdict with its numbers.
fn rollout_summary(r: &Value) -> String {
    let r = &shown(r.clone());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ago = |ms: &Value| match ms.as_u64() {
        Some(0) | None => "-".to_string(),
        Some(ms) => format!("{:.1} s ago", now_ms.saturating_sub(ms) as f64 / 1000.0),
    };
    let mut out = format!(
        "route {}: {}\nstarted {} ({}), step started {}; steps {} % holding {} ms each\n",
        r["route"].as_str().unwrap_or("?"),
        rollout_line(r),
        ago(&r["started_unix_ms"]),
        r["origin"].as_str().unwrap_or("?"),
        ago(&r["step_started_unix_ms"]),
        r["plan"]["steps"],
        r["plan"]["hold_ms"],
    );
    let v = &r["last_verdict"];
    if v.is_object() {
        let pct = |x: &Value| {
            x.as_f64()
                .map_or("-".into(), |x| format!("{:.2} %", x * 100.0))
        };
        let ms = |x: &Value| x.as_f64().map_or("-".into(), |x| format!("{x:.1} ms"));
        out += &format!(
            "last verdict ({}): {} — {}\n  canary   {} responses, 5xx {}, p99 {}\n  baseline {} responses, 5xx {}, p99 {}\n  p99 ratio {}\n",
            ago(&v["at_unix_ms"]),
            v["outcome"].as_str().unwrap_or("?"),
            v["why"].as_str().unwrap_or(""),
            v["canary_requests"],
            pct(&v["canary_5xx_rate"]),
            ms(&v["canary_p99_ms"]),
            v["baseline_requests"],
            pct(&v["baseline_5xx_rate"]),
            ms(&v["baseline_p99_ms"]),
            v["p99_ratio"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.2}")),
        );
    }
    out
}

/// `switchyard rollout start|status|abort ROUTE`: the output, and whether the rollout failed,
/// was aborted or refused (`status`: exit 4).
pub fn rollout(admin: &Admin, action: &args::RolloutAction) -> Result<(String, bool), String> {
    use args::RolloutAction;
    let path = |route: &str| format!("/v1/routes/{}/rollout", encode_route(route));
    let answer = |status: &str, body: &str, what: &str| -> Result<Value, String> {
        let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let error = value["error"]
            .as_str()
            .map(|e| crate::text::escaped(e).to_string());
        if status != "200" && status != "201" {
            return Err(format!(
                "{what}: {status}: {}",
                error.unwrap_or_else(|| crate::text::escaped(body.trim()).to_string())
            ));
        }
        Ok(value)
    };
    match action {
        RolloutAction::Start { route, plan, .. } => {
            let body = plan_body(plan)?;
            let (status, text) = admin.exchange("PUT", &path(route), &body)?;
            let r = answer(&status, &text, "rollout refused")?;
            Ok((format!("rollout started\n{}", rollout_summary(&r)), false))
        }
        RolloutAction::Abort { route, .. } => {
            let (status, text) = admin.exchange("DELETE", &path(route), "")?;
            let r = answer(&status, &text, "abort")?;
            Ok((rollout_summary(&r), false))
        }
        RolloutAction::Status {
            route,
            wait,
            timeout,
            json,
            ..
        } => {
            let deadline = std::time::Instant::now() + duration(timeout)?;
            loop {
                let (status, text) = admin.exchange("GET", &path(route), "")?;
                let r = answer(&status, &text, "status")?;
                let state = r["state"].as_str().unwrap_or("?");
                if !*wait || state != "running" {
                    let out = if *json {
                        serde_json::to_string_pretty(&r).unwrap() + "\n"
                    } else {
                        rollout_summary(&r)
                    };
                    let failed = matches!(state, "failed" | "aborted" | "refused");
                    return Ok((out, failed));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(format!(
                        "still running after {timeout}:\n{}",
                        rollout_summary(&r)
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
