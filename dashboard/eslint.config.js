import js from "@eslint/js";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist", "node_modules", "src/api/schema.d.ts", "e2e/screenshots"] },
  {
    files: ["src/**/*.{ts,tsx}"],
    extends: [
      js.configs.recommended,
      ...tseslint.configs.strictTypeChecked,
      ...tseslint.configs.stylisticTypeChecked,
    ],
    languageOptions: {
      globals: globals.browser,
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "react-hooks": reactHooks },
    rules: {
      ...reactHooks.configs.recommended.rules,
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
      // Data is fetched through TanStack Query only; effects are for subscriptions.
      "no-restricted-syntax": [
        "error",
        {
          selector: "CallExpression[callee.name='useEffect'] CallExpression[callee.name='fetch']",
          message: "fetch data with TanStack Query, not in an effect",
        },
      ],
      "no-restricted-properties": [
        "error",
        { property: "innerHTML", message: "never render user text as HTML" },
        { property: "outerHTML", message: "never render user text as HTML" },
      ],
      "react/no-danger": "off",
    },
  },
  {
    files: ["*.ts"],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: { globals: globals.node },
  },
  {
    files: ["e2e/**/*.mjs", "*.js"],
    extends: [js.configs.recommended],
    // e2e code also runs functions inside the page (page.evaluate).
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
);
