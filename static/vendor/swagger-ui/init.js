/* This project's start-up script for /docs (not from npm): Swagger UI with the settings the
   page embeds (#swagger-settings, from config/api.py's VendoredSwagger) and, when the API takes
   session auth, the page's CSRF token on every request it sends. No inline script. */
(function () {
  "use strict";
  var page = document.body.dataset;
  var config = JSON.parse(document.getElementById("swagger-settings").textContent);
  config.dom_id = "#swagger-ui";
  config.presets = [SwaggerUIBundle.presets.apis];
  if (page.apiCsrf && page.csrfToken) {
    config.requestInterceptor = function (req) {
      req.headers["X-CSRFToken"] = page.csrfToken;
      return req;
    };
  }
  window.ui = SwaggerUIBundle(config);
})();
