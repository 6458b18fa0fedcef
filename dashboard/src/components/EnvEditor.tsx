import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, unwrap } from "../api/client";
import { keys, useEnv } from "../api/queries";
import { fieldError } from "../forms";
import { Button, Checkbox, ConfirmButton, Field, Notice, QueryState, Section, Table } from "./ui";

/** The service's variables; a change applies with the next deploy. */
export function EnvEditor(props: { serviceId: string }) {
  const env = useEnv(props.serviceId);
  const client = useQueryClient();
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [secret, setSecret] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
  // Secret values shown on request (each reveal is written to the audit log).
  const [revealed, setRevealed] = useState<Record<string, string>>({});
  const invalidate = async () => {
    await client.invalidateQueries({ queryKey: keys.env(props.serviceId) });
    await client.invalidateQueries({ queryKey: keys.service(props.serviceId) });
  };
  const put = useMutation({
    mutationFn: () =>
      unwrap(
        api.PUT("/api/v1/services/{id}/env/{name}", {
          params: { path: { id: props.serviceId, name } },
          body: { value, secret },
        }),
      ),
    onSuccess: async () => {
      setSaved(`${name} saved; deploy to apply it`);
      setName("");
      setValue("");
      setSecret(false);
      await invalidate();
    },
  });
  const reveal = useMutation({
    mutationFn: (variable: string) =>
      unwrap(api.POST("/api/v1/services/{id}/env/{name}/reveal", { params: { path: { id: props.serviceId, name: variable } } })),
    onSuccess: (shown) => {
      setRevealed((current) => ({ ...current, [shown.name]: shown.value }));
    },
  });
  const unset = useMutation({
    mutationFn: (variable: string) =>
      unwrap(api.DELETE("/api/v1/services/{id}/env/{name}", { params: { path: { id: props.serviceId, name: variable } } })),
    onSuccess: async (_, variable) => {
      setSaved(`${variable} removed; deploy to apply it`);
      await invalidate();
    },
  });
  return (
    <Section title="Environment variables">
      {env.data ? (
        env.data.length === 0 ? (
          <p className="muted">No variables.</p>
        ) : (
          <Table columns={["Name", "Value", ""]}>
                {env.data.map((v) => (
                  <tr key={v.name} data-testid={`env-${v.name}`}>
                    <th scope="row">
                      <code>{v.name}</code>
                    </th>
                    <td>
                      {!v.secret ? (
                        <code>{v.value}</code>
                      ) : v.name in revealed ? (
                        <code data-testid={`revealed-${v.name}`}>{revealed[v.name]}</code>
                      ) : (
                        <span className="muted">secret (hidden)</span>
                      )}
                    </td>
                    <td>
                      {v.secret && !(v.name in revealed) ? (
                        <Button
                          busy={reveal.isPending && reveal.variables === v.name}
                          onClick={() => {
                            reveal.mutate(v.name);
                          }}
                        >
                          Reveal
                        </Button>
                      ) : null}{" "}
                      <ConfirmButton
                        question={`Remove ${v.name}?`}
                        confirmLabel="Remove"
                        busy={unset.isPending}
                        onConfirm={() => {
                          unset.mutate(v.name);
                        }}
                      >
                        Remove
                      </ConfirmButton>
                    </td>
                  </tr>
                ))}
              </Table>
        )
      ) : (
        <QueryState error={env.error} what="variables" />
      )}
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setSaved(null);
          put.mutate();
        }}
      >
        <Field label="Variable name" name="env-name" value={name} onChange={setName} required error={fieldError(put.error, "name")} />
        <Field label="Value" name="env-value" type={secret ? "password" : "text"} value={value} onChange={setValue} error={fieldError(put.error, "value")} />
        <Checkbox label="Secret" checked={secret} onChange={setSecret} />
        <Button type="submit" kind="primary" busy={put.isPending}>
          Set variable
        </Button>
      </form>
      <Notice error={fieldError(put.error, "name", "value") ? undefined : (put.error ?? unset.error ?? reveal.error)} success={saved} />
    </Section>
  );
}
