//! The account lifecycle's Graph writes on a user, for `keyturn retire`: disable it
//! (`PATCH accountEnabled`) or delete it (`DELETE /users/{id}`, a soft delete: Entra keeps
//! it in the deleted items for 30 days). Run with the account's `provision_identity`.

use super::GraphDirectory;
use crate::directory::DirectoryError;

impl GraphDirectory {
    /// Sets `accountEnabled` on the user (`PATCH /v1.0/users/{user}`, 204).
    pub(crate) async fn set_account_enabled(
        &self,
        user: &str,
        enabled: bool,
    ) -> Result<(), DirectoryError> {
        let token = self.token(user).await?;
        let request = self
            .http
            .client
            .patch(self.user_url(user))
            .bearer_auth(token)
            .json(&serde_json::json!({ "accountEnabled": enabled }));
        self.send_write(user, request).await.map(drop)
    }

    /// Deletes the user (`DELETE /v1.0/users/{user}`, 204); `false` when Graph says it does
    /// not exist (404), e.g. deleted before.
    pub(crate) async fn delete_user(&self, user: &str) -> Result<bool, DirectoryError> {
        let token = self.token(user).await?;
        let request = self
            .http
            .client
            .delete(self.user_url(user))
            .bearer_auth(token);
        match self.send_write(user, request).await {
            Ok(_) => Ok(true),
            Err(DirectoryError::Rejected { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
