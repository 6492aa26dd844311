//! The admin API's endpoints that do more than read a value: `/v1/routes` built off the control
//! thread, and the ones that change something — an app's maintenance switch, a route's weights,
//! its canary rollout — and the dry run of an app change (`/v1/plan`). `mod.rs` serves, routes
//! and authorizes; each handler here is one endpoint.

use super::*;

/// `/v1/routes` builds at most this many answers at once (each on the blocking pool); more
/// wait their turn.
static ROUTES_BUILDS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Admin {
    /// `/v1/routes` (or a page of it) as JSON text, streamed as it is written
    /// (`bulk_text`: the whole table at 50,000 apps is 190 MB). Built on the blocking pool from
    /// the snapshot loaded now, never on the control thread's loop: at 10,000 apps the whole
    /// table takes tens of ms to walk and serialize, and the control thread is the one that
    /// compiles and swaps tables. The counters in it (served, active, errors, ejections, state)
    /// are read from the backends' atomics at that moment, so every answer is fresh. `None`:
    /// shutting down.
    pub(super) async fn routes_view(&self, page: views::Page) -> Option<BulkBody> {
        let turn = ROUTES_BUILDS.acquire().await.ok()?;
        let snapshot = self.store.load_full();
        let failures = self.bind_failures.lock().unwrap().clone();
        let draining = self.status.draining.lock().unwrap().clone();
        let status = self.status.clone();
        let rollouts = self.rollouts.all();
        // The turn goes with the build, not with the sending: a client that leaves does not
        // free it early, and a slow one does not hold it.
        Some(crate::bulk_text::BulkText::written_on_blocking_pool(
            move |text| {
                let _turn = turn;
                let view =
                    views::routes(&snapshot, &failures, &status, &draining, &page, &rollouts);
                serde_json::to_writer_pretty(&mut *text, &view).expect("routes serialize");
                text.push(b"\n");
            },
        ))
    }

    /// `PUT /v1/apps/{app id}/maintenance` puts an app in maintenance (its HTTP requests are
    /// answered 503 with its page, its routes kept); `DELETE` takes it out. Answers once the
    /// new table is live.
    pub(super) async fn maintenance(&self, method: &Method, app: String) -> Response<BulkBody> {
        let on = match *method {
            Method::PUT | Method::POST => true,
            Method::DELETE => false,
            _ => return text(StatusCode::METHOD_NOT_ALLOWED, "PUT or DELETE\n".into()),
        };
        self.apply(|reply| crate::reconciler::Command::SetMaintenance {
            app: app.into(),
            on,
            reply,
        })
        .await
    }

    /// Sends the reconciler a change that answers once its table is live, and tells the
    /// client how it went: 200 applied; 404 with the reconciler's reason (no such app or
    /// route); 503 shutting down or not applied within 10 s.
    async fn apply(
        &self,
        command: impl FnOnce(
            tokio::sync::oneshot::Sender<Result<(), String>>,
        ) -> crate::reconciler::Command,
    ) -> Response<BulkBody> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.commands.send(command(reply)).await.is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
            Ok(Ok(Ok(()))) => text(StatusCode::OK, "ok\n".into()),
            Ok(Ok(Err(e))) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not applied in time\n".into(),
            ),
        }
    }

    /// `POST /v1/plan` with Marathon app definitions (`{"apps": […]}` or an array, at most
    /// 16 MiB): what deploying them would change (`plan::Plan` as JSON). Compiled off the
    /// control thread's loop, on the blocking pool.
    pub(super) async fn plan(&self, req: Request<Incoming>) -> Response<BulkBody> {
        use http_body_util::BodyExt;
        // One plan at a time: each holds its body (up to 16 MiB) and a compiled copy of the
        // cluster; a burst of them would take the memory the proxy needs.
        let Ok(_one) = self.planning.try_acquire() else {
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "another plan is being computed\n".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return r;
        };
        let body = http_body_util::Limited::new(req.into_body(), 16 << 20);
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "body unreadable or over 16 MiB\n".into(),
            );
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = crate::reconciler::Command::Inputs { reply };
        if self.commands.send(command).await.is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
        let Ok(Ok((cluster, config, zone))) =
            tokio::time::timeout(std::time::Duration::from_secs(10), answer).await
        else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no answer in time\n".into(),
            );
        };
        let planned = tokio::task::spawn_blocking(move || {
            plan::plan(&cluster, &config, zone.as_ref(), &body)
        })
        .await;
        match planned {
            Ok(Ok(plan)) => {
                let body = serde_json::to_string_pretty(&plan).expect("plan serializes");
                let mut r = text(StatusCode::OK, body + "\n");
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            Ok(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "plan failed\n".into()),
        }
    }

    /// `PUT /v1/routes/{route}/weights` with `{"app id": weight, …}` sets a route's weights
    /// (apps left out get 0); `DELETE` clears them. Answers once the new table is live.
    pub(super) async fn weights(
        &self,
        req: Request<Incoming>,
        route: String,
    ) -> Response<BulkBody> {
        use http_body_util::BodyExt;
        let weights = match *req.method() {
            Method::DELETE => None,
            Method::PUT | Method::POST => {
                let body = http_body_util::Limited::new(req.into_body(), 64 * 1024);
                let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "body unreadable or over 64 KiB\n".into(),
                    );
                };
                match serde_json::from_slice::<std::collections::BTreeMap<String, u32>>(&body) {
                    Ok(w) => Some(w.into_iter().map(|(k, v)| (k.into(), v)).collect()),
                    Err(e) => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("expected {{\"app id\": weight}}: {e}\n"),
                        );
                    }
                }
            }
            _ => return text(StatusCode::METHOD_NOT_ALLOWED, "PUT or DELETE\n".into()),
        };
        // A rollout's weights and an operator's are never both in force (`Rollouts::release`).
        if let Err(why) = self.rollouts.release(&route) {
            return text(StatusCode::CONFLICT, format!("{why}\n"));
        }
        self.apply(|reply| crate::reconciler::Command::SetWeights {
            route,
            weights,
            reply,
        })
        .await
    }
}

impl Admin {
    /// `GET /v1/routes/{route}/rollout`: the route's rollout. `PUT` (or `POST`) with a plan
    /// (`routing::rollout::Plan`): starts one — 201 with it; 400 for a plan refused or a
    /// canary and baseline that cannot be told, with why; 404 for no such route; 409 while
    /// another runs. `DELETE`: aborts it (the canary's weight to 0).
    pub(super) async fn rollout(
        &self,
        req: Request<Incoming>,
        route: String,
    ) -> Response<BulkBody> {
        use http_body_util::BodyExt;
        let answer = |status: StatusCode, r: &crate::rollout::Rollout| {
            let mut r = text(
                status,
                serde_json::to_string_pretty(r).expect("serializes") + "\n",
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        };
        let error = |status: StatusCode, why: String| {
            json_response(status, serde_json::json!({ "error": why }))
        };
        match *req.method() {
            Method::GET | Method::HEAD => match self.rollouts.get(&route) {
                Some(r) => answer(StatusCode::OK, &r),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no rollout on route {route:?}"),
                ),
            },
            Method::DELETE => match self.rollouts.abort(&route) {
                Some(r) => answer(StatusCode::OK, &r),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no rollout on route {route:?}"),
                ),
            },
            Method::PUT | Method::POST => {
                let body = http_body_util::Limited::new(req.into_body(), 16 * 1024);
                let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "body unreadable or over 16 KiB".into(),
                    );
                };
                let Ok(body) = std::str::from_utf8(&body) else {
                    return error(StatusCode::BAD_REQUEST, "body is not UTF-8".into());
                };
                // The API takes JSON only; the `key=value` form is the label's.
                if !body.trim_start().starts_with('{') {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "expected a JSON plan: {\"steps\": [1, 5, 25, 50, 100], \"hold\": \"5m\", …}"
                            .into(),
                    );
                }
                let plan = match crate::routing::rollout::Plan::parse(body) {
                    Ok(p) => p,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                };
                let snapshot = self.store.load_full();
                match self.rollouts.start(&route, plan, &snapshot.table) {
                    Ok(r) => answer(StatusCode::CREATED, &r),
                    Err(crate::rollout::StartError::NoRoute) => {
                        error(StatusCode::NOT_FOUND, format!("no route named {route:?}"))
                    }
                    Err(crate::rollout::StartError::Running) => error(
                        StatusCode::CONFLICT,
                        format!("a rollout is running on {route:?}: abort it first"),
                    ),
                    Err(crate::rollout::StartError::Unresolved(why)) => {
                        error(StatusCode::BAD_REQUEST, why)
                    }
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET, PUT or DELETE\n".into(),
            ),
        }
    }
}
