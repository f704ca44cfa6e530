//! Query parameters of the rebate routes.

use flashback_store::RebateRole;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RebateQuery {
    /// From the previous page (`next_cursor`).
    #[param(pattern = r"^((buyer|inviter|grand_inviter)\.[^.]+\.[\s\S]+)?$")]
    pub cursor: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The month to reconcile.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// `YYYY-MM` (Beijing time, as networks settle), 1970-01 to 9998-12.
    #[param(pattern = "^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$")]
    pub month: String,
}

/// Whose share of a row a user is paid.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Buyer,
    Inviter,
    GrandInviter,
}

impl From<RebateRole> for RoleName {
    fn from(r: RebateRole) -> Self {
        match r {
            RebateRole::Buyer => RoleName::Buyer,
            RebateRole::Inviter => RoleName::Inviter,
            RebateRole::GrandInviter => RoleName::GrandInviter,
        }
    }
}
