//! The notebook gateway listener. Proxying to JupyterLab arrives with the local runtime; until
//! then every path answers that no notebook is reachable there.
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use atelier_wire::ErrorBody;

pub fn router() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            axum::Json(ErrorBody {
                error_code: "ModelArts.6404".to_owned(),
                error_msg: "No running notebook is reachable at this path.".to_owned(),
            }),
        )
            .into_response()
    })
}
