// ESLint flat config for Bollard's web console: plain ES modules that run in the browser,
// shipped as they are (no build step) from src/bollard/server/web/static/. The unit tests in
// web/test/ run in Node. Run from the repository root: `make test-web`.
import js from "@eslint/js";
import globals from "globals";

const STATIC = "src/bollard/server/web/static";

export default [
  {
    // Vendored third-party code is not ours to lint (noVNC comes from Debian's package).
    ignores: [`${STATIC}/vendor/**`, "web/node_modules/**"],
  },
  js.configs.recommended,
  {
    files: [`${STATIC}/**/*.js`],
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: "module",
      globals: { ...globals.browser },
    },
  },
  {
    files: ["web/**/*.js"],
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: "module",
      globals: { ...globals.node },
    },
  },
  {
    files: [`${STATIC}/**/*.js`, "web/**/*.js"],
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", caughtErrors: "all" }],
      "no-undef": "error",
      eqeqeq: ["error", "always"],
      "prefer-const": "error",
      "no-var": "error",
      "no-implicit-globals": "error",
      "no-shadow": "error",
      "no-throw-literal": "error",
      "no-unused-expressions": "error",
      "no-use-before-define": ["error", { functions: false, classes: true, variables: false }],
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "no-console": ["error", { allow: ["warn", "error"] }],
      "no-alert": "error",
      "no-restricted-syntax": [
        "error",
        {
          // Text from the API must never become markup: set textContent or build nodes.
          selector: "AssignmentExpression[left.property.name=/^(innerHTML|outerHTML)$/]",
          message: "Do not assign innerHTML/outerHTML: build DOM nodes or set textContent.",
        },
        {
          selector: "CallExpression[callee.property.name='insertAdjacentHTML']",
          message: "Do not use insertAdjacentHTML: build DOM nodes or set textContent.",
        },
        {
          selector: "CallExpression[callee.object.name='document'][callee.property.name='write']",
          message: "Do not use document.write.",
        },
      ],
      "no-useless-return": "error",
    },
  },
];
