// Swagger UI over the service's own contract; the page session's cookie authorises the
// "Try it out" calls only for the documentation itself (API routes need a key).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
});
