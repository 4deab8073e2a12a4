// /api/docs: swagger-ui on our own document. Requests made from "Try it out" use the
// signed-in session cookie; unsafe methods get the CSRF token from /api/v1/me.
(function () {
  "use strict";
  let csrf = null;
  fetch("/api/v1/me", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (me) { csrf = me && me.csrf_token; })
    .catch(function () { csrf = null; });
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    withCredentials: true,
    requestInterceptor: function (req) {
      if (csrf && req.method && !/^(GET|HEAD|OPTIONS)$/i.test(req.method)) {
        req.headers["X-CSRF-Token"] = csrf;
      }
      return req;
    },
  });
})();
