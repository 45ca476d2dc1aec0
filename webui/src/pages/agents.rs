//! `/agents`: every agent with its host, queues, slots in use, heartbeat age and running tries.

use askama::Template;
use askama_web::WebTemplate;
use goflow_proto::{ListAgentsRequest, ListInstancesRequest};

use super::now_ms;
use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::view;

#[derive(Template, WebTemplate)]
#[template(path = "pages/agents.html")]
pub struct AgentsPage {
    ctx: Ctx,
    agents: Vec<AgentRow>,
}

struct AgentRow {
    id: String,
    host: String,
    queues: String,
    alive: bool,
    /// Stopping: finishes its tries, takes no new ones.
    draining: bool,
    slots: String,
    heartbeat_age: String,
    heartbeat: String,
    registered: String,
    version: String,
    /// `task@day` links of the instances running on it.
    running: Vec<(String, String)>,
}

pub async fn page(app: AppState, ctx: Ctx) -> Result<AgentsPage, WebError> {
    let mut client = app.client();
    let agents = client
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .agents;
    let running = client
        .list_instances(ListInstancesRequest {
            states: vec!["running".into()],
            limit: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .instances;
    let now = now_ms();
    let mut rows: Vec<AgentRow> = agents
        .into_iter()
        .map(|a| AgentRow {
            running: running
                .iter()
                .filter(|i| i.agent == a.id)
                .map(|i| {
                    (
                        format!("{}@{}", i.task, i.etl_day),
                        format!("/instances/{}/{}", i.task, i.etl_day),
                    )
                })
                .collect(),
            alive: a.state == "alive",
            draining: a.draining,
            slots: format!("{} / {}", a.running, a.slots),
            heartbeat_age: view::age(a.last_heartbeat_at, now, ctx.lang),
            heartbeat: view::time(a.last_heartbeat_at),
            registered: view::time(a.registered_at),
            queues: a.queues.join(", "),
            id: a.id,
            host: a.host,
            version: a.version,
        })
        .collect();
    // The dead first: they are what needs a look.
    rows.sort_by(|a, b| a.alive.cmp(&b.alive).then(a.id.cmp(&b.id)));
    Ok(AgentsPage { ctx, agents: rows })
}

#[cfg(test)]
mod tests {
    use crate::testing::{get, sample};

    #[tokio::test]
    async fn dead_agents_first_with_slots_and_running_tries() {
        let app = sample().start().await;
        let (_, body) = get(&app, "/agents").await;
        let dead = body.find("agent-2").unwrap();
        let alive = body.find("<td>agent-1</td>").unwrap();
        assert!(dead < alive, "the dead agent is listed first");
        assert!(body.contains(">1 / 4<") && body.contains("default, io"));
        assert!(body.contains(r#"<a href="/instances/transform/20260110">transform@20260110</a>"#));
        // agent-1 drains, agent-2 does not.
        assert_eq!(body.matches("draining: finishing its tries").count(), 1, "{body}");
        assert!(body.find("draining: finishing").unwrap() > alive);
    }
}
