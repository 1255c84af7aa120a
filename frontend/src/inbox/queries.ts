//! REST reads and writes of the inbox, through TanStack Query, and the keys
//! under which their answers are cached (the socket updates the same entries).

import { useInfiniteQuery, useQuery, type QueryClient } from "@tanstack/react-query";
import { unwrap, type Api } from "../api/client";
import type { Conversation, Message, PageConversation } from "../api/types";
import { useServices } from "../app/services";
import { filtersToQuery, type Filters } from "./filters";
import { threadFromPage, type ListData, type Thread } from "./live";

export const PAGE_SIZE = 50;

export const keys = {
  lists: ["conversations"] as const,
  list: (f: Filters) => ["conversations", f] as const,
  conversation: (id: string) => ["conversation", id] as const,
  threads: ["thread"] as const,
  thread: (id: string) => ["thread", id] as const,
};

export function useConversationList(filters: Filters) {
  const { api } = useServices();
  return useInfiniteQuery({
    queryKey: keys.list(filters),
    initialPageParam: null as string | null,
    queryFn: ({ pageParam, signal }): Promise<PageConversation> =>
      unwrap(
        api.GET("/api/conversations", {
          params: { query: { ...filtersToQuery(filters), limit: PAGE_SIZE, ...(pageParam ? { cursor: pageParam } : {}) } },
          signal,
        }),
      ),
    getNextPageParam: (last) => last.next_cursor,
  });
}

export function fetchConversation(api: Api, id: string): Promise<Conversation> {
  return unwrap(api.GET("/api/conversations/{id}", { params: { path: { id } } }));
}

export function useConversation(id: string | undefined) {
  const { api, queryClient } = useServices();
  return useQuery({
    queryKey: keys.conversation(id ?? ""),
    queryFn: () => fetchConversation(api, id!),
    enabled: !!id,
    // The list's copy shows at once while the conversation's own loads.
    placeholderData: () => (id ? knownConversation(queryClient, id) : undefined),
  });
}

export async function fetchMessages(api: Api, id: string, cursor: string | null): Promise<{ items: Message[]; next_cursor: string | null }> {
  return unwrap(
    api.GET("/api/conversations/{id}/messages", {
      params: { path: { id }, query: { limit: PAGE_SIZE, ...(cursor ? { cursor } : {}) } },
    }),
  );
}

export function useThread(id: string | undefined) {
  const { api } = useServices();
  return useQuery({
    queryKey: keys.thread(id ?? ""),
    queryFn: async (): Promise<Thread> => {
      const page = await fetchMessages(api, id!, null);
      return threadFromPage(page.items, page.next_cursor);
    },
    enabled: !!id,
  });
}

/** Every cached conversation list, with the filters it was asked with. */
export function cachedLists(qc: QueryClient): Array<[Filters, ListData]> {
  return qc
    .getQueriesData<ListData>({ queryKey: keys.lists })
    .filter((entry): entry is [readonly unknown[], ListData] => entry[1] !== undefined)
    .map(([key, data]) => [key[1] as Filters, data]);
}

/** The freshest copy of a conversation the cache holds, from its own entry or any list. */
export function knownConversation(qc: QueryClient, id: string): Conversation | undefined {
  const own = qc.getQueryData<Conversation>(keys.conversation(id));
  if (own) return own;
  for (const [, data] of cachedLists(qc)) {
    for (const page of data.pages) {
      const c = page.items.find((x) => x.id === id);
      if (c) return c;
    }
  }
  return undefined;
}
