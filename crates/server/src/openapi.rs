//! The OpenAPI document: generated from the handlers' annotations, then given the responses
//! every authenticated route shares.
use utoipa::OpenApi;
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Atelier — ModelArts DevEnviron notebook API",
        description = "The ModelArts notebook API as served by Atelier. Requests are signed with \
SDK-HMAC-SHA256 (AK/SK) or carry an X-Auth-Token. Error bodies are {error_code, error_msg}."
    ),
    components(schemas(atelier_wire::ErrorBody))
)]
pub struct ApiDoc;

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build(),
    )
}

/// Adds the shared error responses (400, 401, 403, 404, 405, 413, 500) to every operation
/// (no 403 for the `/v3/…` IAM reads).
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let shared = [
        ("400", "Invalid request (ModelArts.63xx/64xx/67xx codes)"),
        ("401", "Missing or invalid signature or token (APIG.0301)"),
        ("403", "The project is not the caller's (ModelArts.0210)"),
        (
            "404",
            "Unknown notebook (ModelArts.6309) or other resource (ModelArts.6404)",
        ),
        ("405", "Method not allowed"),
        ("413", "Request body too large"),
        ("500", "Internal error (ModelArts.0010)"),
    ];
    for (name, path) in doc.paths.paths.iter_mut() {
        // The IAM reads name no project, so no project can be refused.
        let iam = name.starts_with("/v3/");
        let operations = [
            &mut path.get,
            &mut path.put,
            &mut path.post,
            &mut path.delete,
            &mut path.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, description) in shared {
                if iam && status == "403" {
                    continue;
                }
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_response(description));
            }
        }
    }
    doc
}
