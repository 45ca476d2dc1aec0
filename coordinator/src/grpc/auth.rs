//! AuthService: log in and out, who am I, and API tokens (admin).

use goflow_core::Role;
use goflow_proto as pb;
use pb::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use super::*;
use crate::auth::{self as credentials, TOKEN_PREFIX};
use crate::store::{self, now_ms};

fn token_to_pb(row: store::TokenRow) -> pb::ApiToken {
    pb::ApiToken {
        name: row.name,
        role: row.role,
        created_by: row.created_by,
        created_at: row.created_at,
        expires_at: row.expires_at.unwrap_or(0),
        last_used_at: row.last_used_at.unwrap_or(0),
    }
}

fn role_field(text: &str) -> Result<Role, Status> {
    Role::parse(text).ok_or_else(|| {
        Status::invalid_argument(format!(
            "role {text:?} is unknown (viewer, operator, editor or admin)"
        ))
    })
}

#[tonic::async_trait]
impl AuthService for Api {
    async fn login(&self, request: Request<pb::LoginRequest>) -> RpcResult<pb::LoginResponse> {
        let source = client_address(&request);
        let req = request.into_inner();
        if !self.auth.enabled() {
            return Err(Status::failed_precondition(
                "authentication is off on this coordinator (start it with --auth): no login needed",
            ));
        }
        let (token, role, expires_at) = self.auth.login(&req.user, &req.password, source).await?;
        Ok(Response::new(pb::LoginResponse {
            token,
            user: req.user,
            role: role.to_string(),
            expires_at,
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> RpcResult<pb::LogoutResponse> {
        if let Some(principal) = self
            .auth
            .authorize(bearer(&request).as_deref(), Role::Viewer)
            .await?
        {
            self.auth.logout(&principal).await?;
        }
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> RpcResult<pb::WhoAmIResponse> {
        let principal = self
            .auth
            .authorize(bearer(&request).as_deref(), Role::Viewer)
            .await?;
        Ok(Response::new(match principal {
            Some(p) => pb::WhoAmIResponse {
                principal: p.name,
                role: p.role.to_string(),
                auth_enabled: true,
            },
            None => pb::WhoAmIResponse {
                principal: String::new(),
                role: Role::Admin.to_string(),
                auth_enabled: false,
            },
        }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> RpcResult<pb::CreateTokenResponse> {
        let caller = self.authorize(&request, Role::Admin).await?;
        let req = request.into_inner();
        credentials::check_name("token name", &req.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let role = role_field(&req.role)?;
        if req.expires_in_ms < 0 {
            return Err(Status::invalid_argument("expires_in_ms must not be negative"));
        }
        let now = now_ms();
        let row = store::TokenRow {
            name: req.name.clone(),
            role: role.to_string(),
            created_by: caller.actor.clone(),
            created_at: now,
            expires_at: (req.expires_in_ms > 0).then(|| now + req.expires_in_ms),
            last_used_at: None,
        };
        let (token, hash) = credentials::new_token(TOKEN_PREFIX);
        let mut tx = self.engine.store().begin().await.map_err(internal)?;
        if !store::insert_token(&mut tx, &row, &hash)
            .await
            .map_err(internal)?
        {
            return Err(Status::already_exists(format!(
                "a token named {:?} exists: revoke it first or pick another name",
                req.name
            )));
        }
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "token-create",
            &req.name,
            role.as_str(),
            now,
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            info: Some(token_to_pb(row)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> RpcResult<pb::ListTokensResponse> {
        self.authorize(&request, Role::Admin).await?;
        let mut conn = self.read().await?;
        let tokens = store::list_tokens(&mut conn).await.map_err(internal)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_to_pb).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> RpcResult<pb::RevokeTokenResponse> {
        let caller = self.authorize(&request, Role::Admin).await?;
        let name = request.into_inner().name;
        let mut tx = self.engine.store().begin().await.map_err(internal)?;
        if !store::delete_token(&mut tx, &name).await.map_err(internal)? {
            return Err(Status::not_found(format!("no token named {name:?}")));
        }
        store::record_operation(
            &mut tx,
            &caller.actor,
            &caller.client,
            "token-revoke",
            &name,
            "",
            now_ms(),
        )
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}
