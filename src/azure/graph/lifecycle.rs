//! The account lifecycle's Graph writes on a user, for `keyturn retire`: disable it
//! (`PATCH accountEnabled`) or delete it (`DELETE /users/{id}`, a soft delete: Entra keeps
//! it in the deleted items for 30 days). Run with the account's `provision_identity`.

use super::{read_capped, GraphDirectory, Timed};
use crate::directory::DirectoryError;

impl GraphDirectory {
    /// Sets `accountEnabled` on the user (`PATCH /v1.0/users/{user}`, 204).
    pub(crate) async fn set_account_enabled(
        &self,
        user: &str,
        enabled: bool,
    ) -> Result<(), DirectoryError> {
        let token = self.token(user).await?;
        let resp = self
            .http
            .client
            .patch(self.user_url(user))
            .bearer_auth(token)
            .json(&serde_json::json!({ "accountEnabled": enabled }))
            .send()
            .timed(&self.http)
            .await
            .map_err(|e| Self::transport_error(user, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status == 204 {
            return Ok(());
        }
        let body = read_capped(resp).await.unwrap_or_default();
        Err(Self::answer_error(user, status, &headers, &body, true))
    }

    /// Deletes the user (`DELETE /v1.0/users/{user}`, 204); `false` when Graph says it does
    /// not exist (404), e.g. deleted before.
    pub(crate) async fn delete_user(&self, user: &str) -> Result<bool, DirectoryError> {
        let token = self.token(user).await?;
        let resp = self
            .http
            .client
            .delete(self.user_url(user))
            .bearer_auth(token)
            .send()
            .timed(&self.http)
            .await
            .map_err(|e| Self::transport_error(user, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status == 204 {
            return Ok(true);
        }
        let body = read_capped(resp).await.unwrap_or_default();
        match Self::answer_error(user, status, &headers, &body, true) {
            DirectoryError::Rejected { status: 404, .. } => Ok(false),
            e => Err(e),
        }
    }
}
