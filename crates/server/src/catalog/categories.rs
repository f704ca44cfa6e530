//! Categories (public list, admin create) and public merchant profiles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use flashback_core::{MerchantId, Role};

use super::CatalogError;
use super::views::{CategoryView, CreateCategory, MerchantView};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Json, Path};

/// All categories, by name.
#[utoipa::path(get, path = "/api/v1/categories", tag = "catalog",
    responses((status = 200, body = Vec<CategoryView>)))]
pub async fn list_categories(State(state): State<AppState>) -> Result<axum::Json<Vec<CategoryView>>, Problem> {
    let all = state.store.categories().await.map_err(CatalogError::Store)?;
    Ok(axum::Json(all.into_iter().map(CategoryView::from).collect()))
}

/// Create a category (admins).
#[utoipa::path(post, path = "/api/v1/categories", tag = "catalog", security(("bearer" = [])),
    request_body = CreateCategory,
    responses((status = 201, body = CategoryView), (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_category(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateCategory>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(&[Role::Admin])?;
    let category =
        state.store.create_category(state.ids.category(), body.name).await.map_err(CatalogError::from_write)?;
    Ok((StatusCode::CREATED, axum::Json(CategoryView::from(category))))
}

/// A merchant's public profile.
#[utoipa::path(get, path = "/api/v1/merchants/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Merchant id")),
    responses((status = 200, body = MerchantView), (status = 404, body = Problem)))]
pub async fn get_merchant(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<MerchantView>, Problem> {
    let id = MerchantId::parse(&id).map_err(|_| CatalogError::MerchantNotFound)?;
    let merchant = state.store.merchant(id).await.map_err(CatalogError::Store)?;
    Ok(axum::Json(merchant.ok_or(CatalogError::MerchantNotFound)?.into()))
}
