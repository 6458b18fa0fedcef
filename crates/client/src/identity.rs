//! Setup, login, API tokens, users and teams.
use nanoscale_core::api::{
    ApiToken, CreateTeam, CreateToken, CreateUser, CreatedToken, Credentials, LoginResponse, Me,
    SetupStatus, Team, UpdateUser, User,
};
use reqwest::Method;
use uuid::Uuid;

use crate::{decode, Client, Result};

/// Nothing to send: the type for routes without a body.
type NoBody = ();

impl Client {
    /// Whether the first admin still has to be created (no authentication needed).
    pub async fn setup_status(&self) -> Result<SetupStatus> {
        self.get("/api/v1/setup").await
    }

    /// Creates the first admin. The server answers 409 once any user exists.
    pub async fn setup(&self, credentials: &Credentials) -> Result<User> {
        self.send_json(Method::POST, "/api/v1/setup", credentials)
            .await
    }

    /// Logs in with a password. This client does not keep the session cookie; use
    /// [`Client::start_session`] to act through the session.
    pub async fn login(&self, credentials: &Credentials) -> Result<LoginResponse> {
        let builder = self
            .builder(Method::POST, "/api/v1/auth/login")?
            .json(credentials);
        let response = self.execute(builder).await?;
        decode(response, "POST /api/v1/auth/login").await
    }

    /// Ends the session of a client from [`Client::start_session`]. For a bearer
    /// token this does nothing: revoke the token instead.
    pub async fn logout(&self) -> Result<()> {
        self.send_no_content::<NoBody>(Method::POST, "/api/v1/auth/logout", None)
            .await
    }

    /// Who is calling, with the effective role.
    pub async fn me(&self) -> Result<Me> {
        self.get("/api/v1/me").await
    }

    /// Creates an API token for the caller. The secret is in this answer only.
    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken> {
        self.send_json(Method::POST, "/api/v1/tokens", request)
            .await
    }

    /// The caller's tokens (an admin sees everyone's); secrets are never listed.
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        self.get("/api/v1/tokens").await
    }

    /// Revokes a token at once.
    pub async fn revoke_token(&self, id: Uuid) -> Result<()> {
        self.send_no_content::<NoBody>(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
            .await
    }

    /// Every user (admins only).
    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.get("/api/v1/users").await
    }

    /// Creates a user (admins only).
    pub async fn create_user(&self, request: &CreateUser) -> Result<User> {
        self.send_json(Method::POST, "/api/v1/users", request).await
    }

    /// A user: admins see anyone, others only themselves.
    pub async fn get_user(&self, id: Uuid) -> Result<User> {
        self.get(&format!("/api/v1/users/{id}")).await
    }

    /// Changes a user's role (admin) or password (admin, or the user).
    pub async fn update_user(&self, id: Uuid, request: &UpdateUser) -> Result<User> {
        self.send_json(Method::PATCH, &format!("/api/v1/users/{id}"), request)
            .await
    }

    /// Deletes a user (admins only).
    pub async fn delete_user(&self, id: Uuid) -> Result<()> {
        self.send_no_content::<NoBody>(Method::DELETE, &format!("/api/v1/users/{id}"), None)
            .await
    }

    /// Every team.
    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        self.get("/api/v1/teams").await
    }

    /// Creates a team (admins only).
    pub async fn create_team(&self, request: &CreateTeam) -> Result<Team> {
        self.send_json(Method::POST, "/api/v1/teams", request).await
    }

    /// Deletes a team (admins only).
    pub async fn delete_team(&self, id: Uuid) -> Result<()> {
        self.send_no_content::<NoBody>(Method::DELETE, &format!("/api/v1/teams/{id}"), None)
            .await
    }

    /// Adds a user to a team (admins only); adding a member again is not an error.
    pub async fn add_team_member(&self, team_id: Uuid, user_id: Uuid) -> Result<()> {
        let path = format!("/api/v1/teams/{team_id}/members/{user_id}");
        self.send_no_content::<NoBody>(Method::PUT, &path, None)
            .await
    }

    /// Removes a user from a team (admins only).
    pub async fn remove_team_member(&self, team_id: Uuid, user_id: Uuid) -> Result<()> {
        let path = format!("/api/v1/teams/{team_id}/members/{user_id}");
        self.send_no_content::<NoBody>(Method::DELETE, &path, None)
            .await
    }
}
