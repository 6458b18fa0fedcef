//! Projects, their grants, services, environment variables and releases.
use nanoscale_core::api::{
    CreateGrant, CreateProject, DeployRequest, EnvVar, Grant, Instance, LogEntry, LogQuery,
    Project, Release, ReleaseSelector, RollbackRequest, Service, SetEnvVar, UpdateProject,
};
use nanoscale_core::service::{ServicePatch, ServiceSpec};
use reqwest::Method;
use uuid::Uuid;

use crate::{segment, Client, Result};

type NoBody = ();

impl Client {
    /// Every project.
    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        self.get("/api/v1/projects").await
    }

    /// Creates a project owned by the caller (deployer or admin).
    pub async fn create_project(&self, request: &CreateProject) -> Result<Project> {
        self.send_json(Method::POST, "/api/v1/projects", request)
            .await
    }

    /// One project.
    pub async fn get_project(&self, id: Uuid) -> Result<Project> {
        self.get(&format!("/api/v1/projects/{id}")).await
    }

    /// Renames a project or replaces its shared environment.
    pub async fn update_project(&self, id: Uuid, request: &UpdateProject) -> Result<Project> {
        self.send_json(Method::PATCH, &format!("/api/v1/projects/{id}"), request)
            .await
    }

    /// Deletes a project with all its services and releases.
    pub async fn delete_project(&self, id: Uuid) -> Result<()> {
        let path = format!("/api/v1/projects/{id}");
        self.send_no_content::<NoBody>(Method::DELETE, &path, None)
            .await
    }

    /// Who besides its creator may manage a project.
    pub async fn list_grants(&self, project_id: Uuid) -> Result<Vec<Grant>> {
        self.get(&format!("/api/v1/projects/{project_id}/grants"))
            .await
    }

    /// Lets a user, or every member of a team, manage a project.
    pub async fn create_grant(&self, project_id: Uuid, request: &CreateGrant) -> Result<Grant> {
        let path = format!("/api/v1/projects/{project_id}/grants");
        self.send_json(Method::POST, &path, request).await
    }

    /// Revokes a grant.
    pub async fn delete_grant(&self, project_id: Uuid, grant_id: Uuid) -> Result<()> {
        let path = format!("/api/v1/projects/{project_id}/grants/{grant_id}");
        self.send_no_content::<NoBody>(Method::DELETE, &path, None)
            .await
    }

    /// Every service of every project (secret values redacted).
    pub async fn list_services(&self) -> Result<Vec<Service>> {
        self.get("/api/v1/services").await
    }

    /// The services of one project.
    pub async fn list_project_services(&self, project_id: Uuid) -> Result<Vec<Service>> {
        self.get(&format!("/api/v1/projects/{project_id}/services"))
            .await
    }

    /// Creates a service in a project.
    pub async fn create_service(&self, project_id: Uuid, spec: &ServiceSpec) -> Result<Service> {
        let path = format!("/api/v1/projects/{project_id}/services");
        self.send_json(Method::POST, &path, spec).await
    }

    /// One service (secret values redacted).
    pub async fn get_service(&self, id: Uuid) -> Result<Service> {
        self.get(&format!("/api/v1/services/{id}")).await
    }

    /// Changes the fields present in `patch`; redacted secret values are kept.
    pub async fn update_service(&self, id: Uuid, patch: &ServicePatch) -> Result<Service> {
        self.send_json(Method::PATCH, &format!("/api/v1/services/{id}"), patch)
            .await
    }

    /// Deletes a service and its releases.
    pub async fn delete_service(&self, id: Uuid) -> Result<()> {
        let path = format!("/api/v1/services/{id}");
        self.send_no_content::<NoBody>(Method::DELETE, &path, None)
            .await
    }

    /// A service's variables (secret values shown as `********`).
    pub async fn list_env(&self, service_id: Uuid) -> Result<Vec<EnvVar>> {
        self.get(&format!("/api/v1/services/{service_id}/env"))
            .await
    }

    /// Sets one variable; it takes effect at the next deploy.
    pub async fn set_env(&self, service_id: Uuid, name: &str, request: &SetEnvVar) -> Result<()> {
        let path = format!("/api/v1/services/{service_id}/env/{}", segment(name));
        self.send_no_content(Method::PUT, &path, Some(request))
            .await
    }

    /// One variable with its value, a secret's included (audited by the server).
    pub async fn reveal_env(&self, service_id: Uuid, name: &str) -> Result<EnvVar> {
        let path = format!("/api/v1/services/{service_id}/env/{}/reveal", segment(name));
        self.send_json(Method::POST, &path, &()).await
    }

    /// Removes one variable; 404 when the service has no such variable.
    pub async fn unset_env(&self, service_id: Uuid, name: &str) -> Result<()> {
        let path = format!("/api/v1/services/{service_id}/env/{}", segment(name));
        self.send_no_content::<NoBody>(Method::DELETE, &path, None)
            .await
    }

    /// Creates a release of the service's ref, or of `git_ref` when given; the
    /// server resolves it to an exact commit.
    pub async fn deploy(&self, service_id: Uuid, git_ref: Option<&str>) -> Result<Release> {
        let path = format!("/api/v1/services/{service_id}/deploy");
        match git_ref {
            // No body at all: the route treats a missing body as "the service's ref".
            None => {
                let response = self.execute(self.builder(Method::POST, &path)?).await?;
                crate::decode(response, &format!("POST {path}")).await
            }
            Some(git_ref) => {
                let request = DeployRequest {
                    git_ref: Some(git_ref.to_owned()),
                };
                self.send_json(Method::POST, &path, &request).await
            }
        }
    }

    /// Makes an earlier release current again, as a new release.
    pub async fn rollback(&self, service_id: Uuid, release: ReleaseSelector) -> Result<Release> {
        let path = format!("/api/v1/services/{service_id}/rollback");
        self.send_json(Method::POST, &path, &RollbackRequest { release })
            .await
    }

    /// A service's releases, newest first.
    pub async fn list_releases(&self, service_id: Uuid) -> Result<Vec<Release>> {
        self.get(&format!("/api/v1/services/{service_id}/releases"))
            .await
    }

    /// A service's running instances on every node.
    pub async fn list_instances(&self, service_id: Uuid) -> Result<Vec<Instance>> {
        self.get(&format!("/api/v1/services/{service_id}/instances"))
            .await
    }

    /// The newest log lines of a service's instances (or of one release's build).
    pub async fn service_logs(&self, service_id: Uuid, query: &LogQuery) -> Result<Vec<LogEntry>> {
        self.get_query(&format!("/api/v1/services/{service_id}/logs"), query)
            .await
    }

    /// One release.
    pub async fn get_release(&self, id: Uuid) -> Result<Release> {
        self.get(&format!("/api/v1/releases/{id}")).await
    }
}
