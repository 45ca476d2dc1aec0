//! The fake coordinator's AuthService: the users of `USERS` when authentication is on.

use goflow_proto::auth_service_server::AuthService;
use goflow_proto::*;
use tonic::{Response, Status};

use super::*;

#[tonic::async_trait]
impl AuthService for Fake {
    async fn login(&self, request: tonic::Request<LoginRequest>) -> Rpc<LoginResponse> {
        if self.users.is_empty() {
            return Err(Status::failed_precondition("authentication is off"));
        }
        let r = request.into_inner();
        let (user, _, role) = self
            .users
            .iter()
            .find(|(name, password, _)| *name == r.user && *password == r.password)
            .ok_or_else(|| Status::unauthenticated("wrong user or password"))?;
        Ok(Response::new(LoginResponse {
            token: format!("gfs_{user}"),
            user: user.to_string(),
            role: role.to_string(),
            expires_at: chrono::Utc::now().timestamp_millis() + 3_600_000,
        }))
    }

    async fn logout(&self, request: tonic::Request<LogoutRequest>) -> Rpc<LogoutResponse> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.logouts.lock().unwrap().push(bearer);
        Ok(Response::new(LogoutResponse {}))
    }

    async fn who_am_i(&self, request: tonic::Request<WhoAmIRequest>) -> Rpc<WhoAmIResponse> {
        if self.users.is_empty() {
            return Ok(Response::new(WhoAmIResponse::default()));
        }
        let (user, role) = self
            .caller(request.metadata())
            .ok_or_else(|| Status::unauthenticated("log in first"))?;
        Ok(Response::new(WhoAmIResponse {
            principal: user.into(),
            role: role.into(),
            auth_enabled: true,
        }))
    }

    async fn create_token(&self, _: tonic::Request<CreateTokenRequest>) -> Rpc<CreateTokenResponse> {
        Err(Status::unimplemented("create_token"))
    }

    async fn list_tokens(&self, _: tonic::Request<ListTokensRequest>) -> Rpc<ListTokensResponse> {
        Err(Status::unimplemented("list_tokens"))
    }

    async fn revoke_token(&self, _: tonic::Request<RevokeTokenRequest>) -> Rpc<RevokeTokenResponse> {
        Err(Status::unimplemented("revoke_token"))
    }
}
