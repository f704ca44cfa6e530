//! Product endpoints: public detail (cached) and listings (keyset pages); merchant and admin
//! writes, each of which invalidates the cached copy.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use flashback_core::{CategoryId, Cursor, MerchantId, PageLimit, ProductId, ProductStatus, Role};
use flashback_store::{NewProduct, Product, ProductFilter, ProductPatch};

use super::CatalogError;
use super::views::{
    AdjustStock, CreateProduct, ListQuery, OwnListQuery, ProductPage, ProductView, SetInventory, SetStatus,
    UpdateProduct,
};
use crate::AppState;
use crate::auth::Caller;
use crate::http::Problem;
use crate::http::extract::{Json, Path, Query};

/// Response header saying where a product detail came from: `hit`, `miss` or `stale`.
pub const X_CACHE: &str = "x-cache";

fn product_id(raw: &str) -> Result<ProductId, CatalogError> {
    // An id that cannot exist is simply not found.
    ProductId::parse(raw).map_err(|_| CatalogError::ProductNotFound)
}

fn query_problem(e: flashback_core::ParseError) -> Problem {
    Problem::bad_request("invalid_query", e.to_string())
}

/// One product with price and stock. `X-Cache` says whether it came from cache; `stale` means
/// the store is unreachable and this is the last copy seen.
#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, body = ProductView, headers(("x-cache" = String, description = "hit, miss or stale"))),
        (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn get_product(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse, Problem> {
    let id = product_id(&id)?;
    let store = state.store.clone();
    let cached =
        state.products.get(&id, async move { store.product(id).await }).await.map_err(|e| Problem::from_store(&e))?;
    let product = cached.value.ok_or(CatalogError::ProductNotFound)?;
    let mut headers = HeaderMap::new();
    headers.insert(X_CACHE, HeaderValue::from_static(cached.source.header_value()));
    if cached.source == flashback_infra::Source::Stale {
        headers.insert("warning", HeaderValue::from_static("110 - \"Response is Stale\""));
    }
    Ok((headers, axum::Json(ProductView::from(product.as_ref()))))
}

/// On-shelf products, newest first, optionally by category or merchant, a keyset page at a time.
#[utoipa::path(get, path = "/api/v1/products", tag = "catalog", params(ListQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<ProductPage>, Problem> {
    if q.status.as_deref().is_some_and(|s| s != "on_shelf") {
        return Err(Problem::bad_request("invalid_query", "status: public listings show on-shelf products only"));
    }
    let filter = ProductFilter {
        category_id: q.category_id.as_deref().map(CategoryId::parse).transpose().map_err(query_problem)?,
        merchant_id: q.merchant_id.as_deref().map(MerchantId::parse).transpose().map_err(query_problem)?,
        status: Some(ProductStatus::OnShelf),
    };
    page(&state, filter, q.cursor.as_deref(), q.limit).await
}

/// The calling merchant's own products, any status, newest first.
#[utoipa::path(get, path = "/api/v1/merchant/products", tag = "catalog", security(("bearer" = [])), params(OwnListQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn own_products(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<OwnListQuery>,
) -> Result<axum::Json<ProductPage>, Problem> {
    caller.require(&[Role::Merchant])?;
    let merchant = caller.merchant.ok_or(CatalogError::MerchantRequired("this account runs no merchant"))?;
    let filter = ProductFilter {
        category_id: q.category_id.as_deref().map(CategoryId::parse).transpose().map_err(query_problem)?,
        merchant_id: Some(merchant),
        status: q.status.as_deref().map(str::parse).transpose().map_err(query_problem)?,
    };
    page(&state, filter, q.cursor.as_deref(), q.limit).await
}

async fn page(
    state: &AppState,
    filter: ProductFilter,
    cursor: Option<&str>,
    limit: Option<i64>,
) -> Result<axum::Json<ProductPage>, Problem> {
    let after = cursor.map(Cursor::decode).transpose().map_err(query_problem)?;
    let limit = limit.map(PageLimit::try_from).transpose().map_err(query_problem)?.unwrap_or_default();
    let rows = state.store.products(filter, after, limit).await.map_err(CatalogError::Store)?;
    let next_cursor = (rows.len() == usize::from(limit.get()))
        .then(|| rows.last().map(|p| Cursor { before_id: p.id.get() }.encode()))
        .flatten();
    Ok(axum::Json(ProductPage { items: rows.iter().map(ProductView::from).collect(), next_cursor }))
}

/// Create a product with its initial stock (merchants for themselves, admins for a named merchant).
#[utoipa::path(post, path = "/api/v1/products", tag = "catalog", security(("bearer" = [])), request_body = CreateProduct,
    responses((status = 201, body = ProductView), (status = 403, body = Problem),
        (status = 404, body = Problem, description = "the named merchant does not exist"), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateProduct>,
) -> Result<impl IntoResponse, Problem> {
    caller.require(&[Role::Merchant, Role::Admin])?;
    let merchant_id = match (caller.role, body.merchant_id) {
        (Role::Merchant, None) => {
            caller.merchant.ok_or(CatalogError::MerchantRequired("this account runs no merchant"))?
        }
        (Role::Merchant, Some(_)) => {
            return Err(CatalogError::Invalid("merchant_id: merchants create products for themselves".into()).into());
        }
        (_, Some(m)) => {
            state.store.merchant(m).await.map_err(CatalogError::Store)?.ok_or(CatalogError::MerchantNotFound)?;
            m
        }
        (_, None) => return Err(CatalogError::MerchantRequired("merchant_id: admins must name the merchant").into()),
    };
    let new = NewProduct {
        id: state.ids.product(),
        merchant_id,
        category_id: body.category_id,
        sku: body.sku,
        title: body.title,
        description: body.description.unwrap_or_default(),
        images: body.images,
        list_price: body.list_price_minor,
        status: body.status.unwrap_or(ProductStatus::OnShelf),
        available: body.available,
        regions: body.regions,
    };
    let product = state.store.create_product(new).await.map_err(CatalogError::from_write)?;
    // A miss may have been cached as "does not exist" for this id; ids are new, but be exact.
    state.products.invalidate(&product.id, Some(product.clone())).await;
    Ok((StatusCode::CREATED, axum::Json(ProductView::from(&product))))
}

/// The product as the store has it now, if the caller may manage it.
async fn managed_product(state: &AppState, caller: &Caller, id: &str) -> Result<Product, Problem> {
    caller.require(&[Role::Merchant, Role::Admin])?;
    let id = product_id(id)?;
    let product = state.store.product(id).await.map_err(CatalogError::Store)?.ok_or(CatalogError::ProductNotFound)?;
    if caller.role == Role::Merchant && caller.merchant != Some(product.merchant_id) {
        return Err(CatalogError::NotOwner.into());
    }
    Ok(product)
}

async fn changed(
    state: &AppState,
    result: Result<Product, flashback_store::StoreError>,
) -> Result<axum::Json<ProductView>, Problem> {
    let product = result.map_err(CatalogError::from_write)?;
    state.products.invalidate(&product.id, Some(product.clone())).await;
    Ok(axum::Json(ProductView::from(&product)))
}

/// Change a product's title, description, images, price or category.
#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")), request_body = UpdateProduct,
    responses((status = 200, body = ProductView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn update_product(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateProduct>,
) -> Result<axum::Json<ProductView>, Problem> {
    let product = managed_product(&state, &caller, &id).await?;
    let patch = ProductPatch {
        category_id: body.category_id,
        title: body.title,
        description: body.description,
        images: body.images,
        list_price: body.list_price_minor,
        status: None,
    };
    if patch.is_empty() {
        return Err(CatalogError::Invalid("the body names no field to change".into()).into());
    }
    changed(&state, state.store.update_product(product.id, product.merchant_id, patch).await).await
}

/// Put a product on or off shelf.
#[utoipa::path(put, path = "/api/v1/products/{id}/status", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")), request_body = SetStatus,
    responses((status = 200, body = ProductView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetStatus>,
) -> Result<axum::Json<ProductView>, Problem> {
    let product = managed_product(&state, &caller, &id).await?;
    changed(&state, state.store.set_status(product.id, product.merchant_id, body.status).await).await
}

/// Set absolute stock (and regions). Send `expected_version` to fail with 409 if the inventory
/// changed since you read it; without it the write is unconditional.
#[utoipa::path(put, path = "/api/v1/products/{id}/inventory", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")), request_body = SetInventory,
    responses((status = 200, body = ProductView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn set_inventory(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetInventory>,
) -> Result<axum::Json<ProductView>, Problem> {
    let product = managed_product(&state, &caller, &id).await?;
    let regions = body.regions.unwrap_or_else(|| product.inventory.regions.clone());
    let result = state
        .store
        .set_inventory(product.id, product.merchant_id, body.available, regions, body.expected_version)
        .await;
    changed(&state, result).await
}

/// Add or remove stock in one conditional write (never read-modify-write).
#[utoipa::path(post, path = "/api/v1/products/{id}/inventory/adjustments", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")), request_body = AdjustStock,
    responses((status = 200, body = ProductView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<AdjustStock>,
) -> Result<axum::Json<ProductView>, Problem> {
    let product = managed_product(&state, &caller, &id).await?;
    if body.delta == 0 || body.delta.unsigned_abs() > flashback_core::Stock::MAX.unsigned_abs() {
        return Err(CatalogError::Invalid("delta: must be non-zero and at most 1e9 either way".into()).into());
    }
    changed(&state, state.store.adjust_stock(product.id, product.merchant_id, body.delta).await).await
}
