//! The gRPC API itself, as another language's client would use it.

use std::time::{Duration, Instant};

use goflow_proto as pb;
use pb::control_service_client::ControlServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::sandbox::Sandbox;

#[test]
fn grpc_control_and_health_services() {
    let sb = Sandbox::start();
    let url = sb.server_url();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));

        // Reflection, both versions: a client without the .proto finds the services.
        {
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await
                .expect("reflection v1 answers")
                .into_inner();
            let answer = answers.message().await.expect("a reflection answer").expect("one message");
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                panic!("list_services answered {answer:?}");
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            for wanted in ["goflow.v1.ControlService", "goflow.v1.AgentService", "grpc.health.v1.Health"] {
                assert!(names.iter().any(|n| n == wanted), "reflection lists {names:?}");
            }
            use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
            let alpha = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "goflow.v1.ControlService".into(),
                    ),
                ),
            };
            let mut answers = AlphaClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter(vec![alpha]))
                .await
                .expect("reflection v1alpha answers")
                .into_inner();
            let answer = answers.message().await.expect("a v1alpha answer").expect("one message");
            assert!(
                matches!(
                    answer.message_response,
                    Some(tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f))
                        if !f.file_descriptor_proto.is_empty()
                ),
                "v1alpha gives the file of goflow.v1.ControlService: {answer:?}"
            );
        }

        // Health: the whole server and the ControlService both answer SERVING.
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "goflow.v1.ControlService"] {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health check {service:?}: {e}"))
                .into_inner();
            assert_eq!(
                answer.status(),
                ServingStatus::Serving,
                "health of {service:?}"
            );
        }

        let mut client = ControlServiceClient::connect(url.clone())
            .await
            .unwrap_or_else(|e| panic!("ControlServiceClient::connect {url}: {e}"));
        let applied = client
            .apply_tasks(pb::ApplyTasksRequest {
                document: "tasks:\n  - id: api_a\n    command: \"echo api {{etl_day}}\"\n    retries: 2\n  - id: api_b\n    command: \"echo b\"\n    depends_on: [api_a]\n".into(),
                source_name: "api.yaml".into(),
                dry_run: false,
                prune: false,
            })
            .await
            .expect("ApplyTasks")
            .into_inner();
        let mut created = applied.created.clone();
        created.sort();
        assert_eq!(created, ["api_a", "api_b"], "{applied:?}");

        let tasks = client
            .list_tasks(pb::ListTasksRequest {})
            .await
            .expect("ListTasks")
            .into_inner()
            .tasks;
        let a = tasks.iter().find(|t| t.id == "api_a").expect("api_a listed");
        let b = tasks.iter().find(|t| t.id == "api_b").expect("api_b listed");
        assert_eq!(a.command, "echo api {{etl_day}}");
        assert_eq!(a.retries, 2);
        assert!(a.schedule.is_empty() && a.next_fire_at == 0, "{a:?}");
        assert_eq!(b.depends_on.len(), 1, "{b:?}");
        assert_eq!((b.depends_on[0].task.as_str(), b.depends_on[0].day_offset), ("api_a", 0));

        // Run: the dashed form is accepted and normalized.
        let run = client
            .run(pb::RunRequest {
                task: "api_a".into(),
                etl_day: "2026-03-01".into(),
                down: true,
                ..Default::default()
            })
            .await
            .expect("Run")
            .into_inner();
        assert_eq!(run.instances.len(), 2, "{run:?}");
        for r in &run.instances {
            assert_eq!(r.etl_day, "20260301", "{run:?}");
            assert!(r.id > 0, "{run:?}");
        }
        let b_ref = run.instances.iter().find(|r| r.task == "api_b").expect("api_b in the run");

        // GetInstance by id, until it finishes.
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = loop {
            let i = client
                .get_instance(pb::GetInstanceRequest {
                    id: b_ref.id,
                    ..Default::default()
                })
                .await
                .expect("GetInstance by id")
                .into_inner();
            if i.state == "success" {
                break i;
            }
            assert!(
                Instant::now() < deadline,
                "api_b not success after 60s: {i:?}\n{}",
                sb.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!((done.task.as_str(), done.etl_day.as_str()), ("api_b", "20260301"));
        assert_eq!(done.try_number, 1);
        assert!(done.has_exit_code && done.exit_code == 0, "{done:?}");
        assert!(done.started_at > 0 && done.finished_at >= done.started_at, "{done:?}");

        // GetInstance by task + day is the same instance; api_a succeeded before it.
        let a_inst = client
            .get_instance(pb::GetInstanceRequest {
                task: "api_a".into(),
                etl_day: "20260301".into(),
                ..Default::default()
            })
            .await
            .expect("GetInstance by task and day")
            .into_inner();
        assert_eq!(a_inst.state, "success", "{a_inst:?}");
        assert_eq!(a_inst.max_tries, 3, "retries 2 -> 3 tries: {a_inst:?}");
        assert!(a_inst.finished_at <= done.started_at, "{a_inst:?} {done:?}");
        let again = client
            .get_instance(pb::GetInstanceRequest {
                task: "api_b".into(),
                etl_day: "2026-03-01".into(),
                ..Default::default()
            })
            .await
            .expect("GetInstance by task and dashed day")
            .into_inner();
        assert_eq!(again.id, b_ref.id);

        // The grid's states: each task's days by state, as offsets from from_day.
        let mut states = client
            .list_instance_states(pb::ListInstanceStatesRequest {
                from_day: "20260228".into(),
                to_day: "20260302".into(),
            })
            .await
            .expect("ListInstanceStates")
            .into_inner()
            .states;
        states.sort_by(|x, y| x.task.cmp(&y.task));
        let got: Vec<_> = states
            .iter()
            .map(|s| (s.task.as_str(), s.state.as_str(), s.forced, s.offsets.clone()))
            .collect();
        assert_eq!(
            got,
            [("api_a", "success", false, vec![1]), ("api_b", "success", false, vec![1])]
        );
        let latest = client
            .list_instances(pb::ListInstancesRequest {
                limit: 1,
                skip_total: true,
                ..Default::default()
            })
            .await
            .expect("ListInstances without the total")
            .into_inner();
        assert_eq!((latest.instances.len(), latest.total), (1, 0), "{latest:?}");

        // Errors carry the right code and name the culprit.
        let err = client
            .list_instance_states(pb::ListInstanceStatesRequest {
                from_day: "20260302".into(),
                to_day: "20260228".into(),
            })
            .await
            .expect_err("ListInstanceStates of a reversed span must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("to_day"), "{err:?}");
        let err = client
            .run(pb::RunRequest {
                task: "api_a".into(),
                etl_day: "bad".into(),
                ..Default::default()
            })
            .await
            .expect_err("Run with etl_day \"bad\" must fail");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("etl_day"), "{err:?}");
        let err = client
            .run(pb::RunRequest {
                task: "api_nosuch".into(),
                etl_day: "20260301".into(),
                ..Default::default()
            })
            .await
            .expect_err("Run of an unknown task must fail");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(err.message().contains("api_nosuch"), "{err:?}");
        let err = client
            .get_instance(pb::GetInstanceRequest {
                task: "api_a".into(),
                etl_day: "20260302".into(),
                ..Default::default()
            })
            .await
            .expect_err("GetInstance of a day never run must fail");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    });
}
