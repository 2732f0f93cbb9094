//! The worker pods of a job.

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use solgrid_crds::ComputeJob;
use solgrid_crds::labels::{LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER};
use std::collections::BTreeMap;

/// The name of worker `index` of `attempt`: `<job>-a<attempt>-w<index>`.
pub fn pod_name(job: &str, attempt: u32, index: u32) -> String {
    format!("{job}-a{attempt}-w{index}")
}

/// Checks what the API server cannot: the job's name must fit in a label value
/// (63 characters) and the pod names in a DNS subdomain.
pub fn validate_name(job: &str, workers: u32) -> Result<(), String> {
    if job.len() > 63 {
        return Err(format!(
            "metadata.name is {} characters; worker pods carry it in the label {LABEL_JOB}, which allows 63",
            job.len()
        ));
    }
    let longest = pod_name(job, u32::MAX, workers.saturating_sub(1));
    if longest.len() > 253 {
        return Err("metadata.name is too long for the worker pod names".into());
    }
    Ok(())
}

/// Builds worker `index` of `attempt` (N = spec.workers).
pub fn worker_pod(job: &ComputeJob, attempt: u32, index: u32, scheduler_name: &str) -> Pod {
    let name = job.name_any();
    let spec = &job.spec;
    let labels = BTreeMap::from([
        (LABEL_JOB.to_string(), name.clone()),
        (LABEL_WORKER.to_string(), index.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "solgrid-operator".to_string(),
        ),
    ]);
    let mut annotations = BTreeMap::new();
    if let Some(q) = job.status.as_ref().and_then(|s| s.quote.as_ref()) {
        annotations.insert(
            solgrid_crds::labels::ANN_PRICE_PER_GPU_HOUR.to_string(),
            q.price_per_gpu_hour.to_string(),
        );
    }
    let gpus = BTreeMap::from([(
        spec.gpus.vendor.resource_name().to_string(),
        Quantity(spec.gpus.count.to_string()),
    )]);
    let mut env: Vec<EnvVar> = spec
        .template
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            ..Default::default()
        })
        .collect();
    for (k, v) in [
        ("SOLGRID_JOB", name.clone()),
        ("SOLGRID_WORKER_INDEX", index.to_string()),
        ("SOLGRID_WORKERS", spec.workers.to_string()),
        ("SOLGRID_ATTEMPT", attempt.to_string()),
    ] {
        env.push(EnvVar {
            name: k.into(),
            value: Some(v),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, attempt, index)),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some(scheduler_name.to_string()),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: "worker".into(),
                image: Some(spec.template.image.clone()),
                command: (!spec.template.command.is_empty()).then(|| spec.template.command.clone()),
                args: (!spec.template.args.is_empty()).then(|| spec.template.args.clone()),
                env: Some(env),
                resources: Some(ResourceRequirements {
                    requests: Some(gpus.clone()),
                    limits: Some(gpus),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}
