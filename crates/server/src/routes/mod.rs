//! Every route of the API, listed once: the same list builds the router and `/openapi.json`.
pub mod events;
pub mod feature;
pub mod flavor;
pub mod iam;
pub mod image;
pub mod keypair;
pub mod lease;
pub mod notebook;
pub mod storage;
pub mod tag;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::identity::require_caller;
use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Request ids: 32 hex digits, a fresh UUID each.
#[derive(Clone, Default)]
pub struct HexRequestId;

impl MakeRequestId for HexRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The ModelArts routes and the IAM project reads (all authenticated), and their OpenAPI
/// document.
pub fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(notebook::create_notebook, notebook::list_notebooks))
        .routes(routes!(notebook::list_all_notebooks))
        .routes(routes!(
            notebook::show_notebook,
            notebook::update_notebook,
            notebook::delete_notebook
        ))
        .routes(routes!(notebook::start_notebook))
        .routes(routes!(notebook::stop_notebook))
        .routes(routes!(image::create_image))
        .routes(routes!(events::list_notebook_events))
        .routes(routes!(events::show_notebook_progress))
        .routes(routes!(lease::show_lease, lease::renew_lease))
        .routes(routes!(flavor::list_flavors))
        .routes(routes!(flavor::show_switchable_flavors))
        .routes(routes!(tag::create_notebook_tags))
        .routes(routes!(tag::delete_notebook_tags))
        .routes(routes!(tag::show_notebook_tags))
        .routes(routes!(image::list_image, image::register_image))
        .routes(routes!(image::list_image_group))
        .routes(routes!(image::show_image, image::delete_image))
        .routes(routes!(keypair::create_keypair, keypair::list_keypairs))
        .routes(routes!(keypair::show_keypair, keypair::delete_keypair))
        .routes(routes!(
            storage::attach_dynamic_storage,
            storage::list_dynamic_storages
        ))
        .routes(routes!(
            storage::show_dynamic_storage,
            storage::detach_dynamic_storage
        ))
        .routes(routes!(feature::list_features))
        .routes(routes!(iam::keystone_list_projects))
        .routes(routes!(iam::keystone_list_auth_projects))
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = api_routes();
    let openapi = crate::openapi::finish(openapi);
    let openapi_json: &'static str = Box::leak(
        serde_json::to_string(&openapi)
            .expect("serialisable")
            .into_boxed_str(),
    );
    let request_id = HeaderName::from_static("x-request-id");
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.identity.clone(),
            require_caller,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ));
    Router::new()
        .merge(api)
        .route(
            "/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    openapi_json,
                )
            }),
        )
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .route("/console", axum::routing::get(crate::console::page))
        .route("/console/", axum::routing::get(crate::console::page))
        .route(
            "/console/session",
            axum::routing::get(crate::console::session),
        )
        .fallback(|| async { ApiError::RouteNotFound.into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .with_state(state)
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("a handler panicked".into()).into_response()
            },
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, HexRequestId))
        .layer(SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("x-auth-token"),
        ]))
}
